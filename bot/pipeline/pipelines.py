"""The bot's pipelines, declared by their shape.

    support  Parallel(extraction, strategist, archives) -> coach -> Background(summarizer)
    learn    Parallel(strategist, archives) -> tutor -> Background(extraction, summarizer)
    train    trainer grades the answer (if an exercise is open) -> trainer sets the next one
             -> Background(summarizer)

Helpers whose failure must not cost the user their reply (extraction, strategist, summarizer,
the search of the user's archives) are optional; the agent that writes the reply is required.
`archives` (`bot.agents.archives.ArchiveSearch`) calls no model: it searches the user's own
notes beside the helpers, and only when archives are given.
"""

from __future__ import annotations

from bot.agents.archives import ArchiveSearch, PassageSource
from bot.agents.coach import CoachAgent
from bot.agents.extraction import ExtractionAgent
from bot.agents.strategist import StrategistAgent
from bot.agents.summarizer import SummarizerAgent
from bot.agents.trainer import TrainerAgent, TrainerGradeAgent
from bot.agents.tutor import TutorAgent
from bot.pipeline.steps import Background, Parallel, Pipeline, Step
from bot.storage.repositories import Storage


def build_pipelines(
    storage: Storage | None = None,
    *,
    summary_every: int = 1,
    archives: PassageSource | None = None,
) -> dict[str, Pipeline]:
    """Every pipeline by name; agents store facts, summaries and exercises in `storage`, and
    the coach and tutor draw on the user's archives through `archives` (none: no search step).

    `summary_every`: the summarizer rewrites a chat's summary once it is that many messages
    behind (SUMMARY_EVERY); 1 rewrites it after every exchange.
    """
    facts = storage.facts if storage is not None else None
    summaries = storage.summaries if storage is not None else None
    messages = storage.messages if storage is not None else None
    exercises = storage.exercises if storage is not None else None

    extraction = ExtractionAgent(facts)
    strategist = StrategistAgent()
    summarizer = SummarizerAgent(summaries, messages, every=summary_every)
    # Beside the helpers: the search takes milliseconds, the helpers a model call each.
    search = [Step(ArchiveSearch(archives), optional=True)] if archives is not None else []

    support = Pipeline(
        "support",
        (
            Parallel([Step(extraction, optional=True), Step(strategist, optional=True), *search]),
            Step(CoachAgent()),
            Background(Step(summarizer, optional=True, latest_only=True)),
        ),
    )
    learn = Pipeline(
        "learn",
        (
            Parallel([Step(strategist, optional=True), *search])
            if search
            else Step(strategist, optional=True),
            Step(TutorAgent()),
            Background(
                Step(extraction, optional=True), Step(summarizer, optional=True, latest_only=True)
            ),
        ),
    )
    train = Pipeline(
        "train",
        (
            Step(TrainerGradeAgent(exercises)),
            Step(TrainerAgent(exercises)),
            Background(Step(summarizer, optional=True, latest_only=True)),
        ),
    )
    return {p.name: p for p in (support, learn, train)}


# The pipeline each agent is shown under in `/models` (pipeline models apply per pipeline).
AGENT_HOME_PIPELINE: dict[str, str] = {
    "extraction": "support",
    "strategist": "support",
    "coach": "support",
    "summarizer": "support",
    "tutor": "learn",
    "trainer": "train",
}
