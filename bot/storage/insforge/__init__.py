"""The InsForge backend: PostgreSQL behind InsForge's PostgREST-style records API."""

from __future__ import annotations

from bot.storage.insforge.access import InsForgeAccessRepo
from bot.storage.insforge.archives import InsForgeArchiveRepo
from bot.storage.insforge.budgets import InsForgeBudgetRepo
from bot.storage.insforge.ledger import InsForgeLedgerRepo
from bot.storage.insforge.replay import InsForgeReplayRepo
from bot.storage.insforge.repos import (
    InsForgeAgentModelConfigRepo,
    InsForgeExerciseRepo,
    InsForgeFactRepo,
    InsForgeMessageRepo,
    InsForgeModelCatalogRepo,
    InsForgeModelConfigHistoryRepo,
    InsForgeSummaryRepo,
    InsForgeUserRepo,
    InsForgeUserSettingsRepo,
)
from bot.storage.insforge.tasks import InsForgeTaskRepo
from bot.storage.insforge.trials import InsForgeTrialRepo
from bot.storage.insforge.turns import InsForgeTurnRepo
from bot.storage.insforge_client import InsForgeClient
from bot.storage.repositories import (
    AccessRepo,
    AgentModelConfigRepo,
    ArchiveRepo,
    BudgetRepo,
    ExerciseRepo,
    FactRepo,
    LedgerRepo,
    MessageRepo,
    ModelCatalogRepo,
    ModelConfigHistoryRepo,
    ReplayRepo,
    SummaryRepo,
    TaskRepo,
    TrialRepo,
    TurnRepo,
    UserRepo,
    UserSettingsRepo,
)

__all__ = ["InsForgeStorage"]


class InsForgeStorage:
    """Every repository over one InsForge client. The schema comes from `python -m bot migrate`."""

    @property
    def backend(self) -> str:
        return "insforge"

    @property
    def reads_overlap(self) -> bool:
        return True  # each read is an HTTP round trip

    def __init__(self, client: InsForgeClient) -> None:
        self.client = client
        self.users: UserRepo = InsForgeUserRepo(client)
        self.settings: UserSettingsRepo = InsForgeUserSettingsRepo(client)
        self.messages: MessageRepo = InsForgeMessageRepo(client)
        self.summaries: SummaryRepo = InsForgeSummaryRepo(client)
        self.facts: FactRepo = InsForgeFactRepo(client)
        self.exercises: ExerciseRepo = InsForgeExerciseRepo(client)
        self.model_config: AgentModelConfigRepo = InsForgeAgentModelConfigRepo(client)
        self.model_history: ModelConfigHistoryRepo = InsForgeModelConfigHistoryRepo(client)
        self.archives: ArchiveRepo = InsForgeArchiveRepo(client)
        self.model_catalog: ModelCatalogRepo = InsForgeModelCatalogRepo(client)
        self.access: AccessRepo = InsForgeAccessRepo(client)
        self.ledger: LedgerRepo = InsForgeLedgerRepo(client)
        self.budgets: BudgetRepo = InsForgeBudgetRepo(client)
        self.trials: TrialRepo = InsForgeTrialRepo(client)
        self.turns: TurnRepo | None = InsForgeTurnRepo(client)
        self.replay: ReplayRepo = InsForgeReplayRepo(client)
        self.tasks: TaskRepo = InsForgeTaskRepo(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.25,
    ) -> InsForgeStorage:
        return cls(
            InsForgeClient(
                url,
                api_key,
                timeout=timeout,
                max_retries=max_retries,
                backoff=backoff,
            )
        )

    async def connect(self) -> None:
        """Nothing to open: the session connects on the first request (pooled afterwards)."""

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
