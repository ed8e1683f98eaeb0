"""The embedded backend: one SQLite file (default `DATABASE_URL=sqlite:///data/bot.db`)."""

from __future__ import annotations

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
from bot.storage.sqlite.access import SQLiteAccessRepo
from bot.storage.sqlite.archives import SQLiteArchiveRepo
from bot.storage.sqlite.budgets import SQLiteBudgetRepo
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.sqlite.ledger import SQLiteLedgerRepo
from bot.storage.sqlite.replay import SQLiteReplayRepo
from bot.storage.sqlite.repos import (
    SQLiteAgentModelConfigRepo,
    SQLiteExerciseRepo,
    SQLiteFactRepo,
    SQLiteMessageRepo,
    SQLiteModelCatalogRepo,
    SQLiteModelConfigHistoryRepo,
    SQLiteSummaryRepo,
    SQLiteUserRepo,
    SQLiteUserSettingsRepo,
)
from bot.storage.sqlite.schema import LATEST_VERSION, STEPS, SchemaStep
from bot.storage.sqlite.tasks import SQLiteTaskRepo
from bot.storage.sqlite.trials import SQLiteTrialRepo

__all__ = ["LATEST_VERSION", "STEPS", "SQLiteDatabase", "SQLiteStorage", "SchemaStep"]


class SQLiteStorage:
    """Every repository over one SQLite file; `connect()` creates or migrates the schema."""

    @property
    def backend(self) -> str:
        return "sqlite"

    @property
    def reads_overlap(self) -> bool:
        # Statements run on the loop's thread (SQLiteDatabase): nothing to overlap.
        return False

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.db = SQLiteDatabase(path, busy_timeout=busy_timeout)
        self.users: UserRepo = SQLiteUserRepo(self.db)
        self.settings: UserSettingsRepo = SQLiteUserSettingsRepo(self.db)
        self.messages: MessageRepo = SQLiteMessageRepo(self.db)
        self.summaries: SummaryRepo = SQLiteSummaryRepo(self.db)
        self.facts: FactRepo = SQLiteFactRepo(self.db)
        self.exercises: ExerciseRepo = SQLiteExerciseRepo(self.db)
        self.model_config: AgentModelConfigRepo = SQLiteAgentModelConfigRepo(self.db)
        self.model_history: ModelConfigHistoryRepo = SQLiteModelConfigHistoryRepo(self.db)
        self.archives: ArchiveRepo = SQLiteArchiveRepo(self.db)
        self.model_catalog: ModelCatalogRepo = SQLiteModelCatalogRepo(self.db)
        self.access: AccessRepo = SQLiteAccessRepo(self.db)
        self.ledger: LedgerRepo = SQLiteLedgerRepo(self.db)
        self.budgets: BudgetRepo = SQLiteBudgetRepo(self.db)
        self.trials: TrialRepo = SQLiteTrialRepo(self.db)
        # Each read and write completes on the loop's thread: one round trip saves nothing.
        self.turns: TurnRepo | None = None
        self.replay: ReplayRepo = SQLiteReplayRepo(self.db)
        self.tasks: TaskRepo = SQLiteTaskRepo(self.db)

    @property
    def path(self) -> str:
        return self.db.path

    async def connect(self) -> None:
        await self.db.open()

    async def migrate(self) -> list[SchemaStep]:
        """Open the file and apply missing schema steps; the steps applied (for `migrate`)."""
        return await self.db.open()

    async def ping(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()
