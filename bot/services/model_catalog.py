"""The bot's own catalog of named models: what `/catalog` lists and `/setmodel <target> <alias>`
assigns.

    catalog = Catalog.build(configured_models(settings), rows)   # environment + stored rows
    entry = catalog.get("fast")                                 # by alias
    picked = catalog.interpret("fast")       # an alias, a provider:model spec or an OpenRouter id
    picked.spec, picked.entry, picked.params

Every spec named in the environment (DEFAULT_MODEL, FALLBACK_MODELS, USER_MODELS, AGENT_MODELS,
PIPELINE_MODELS) is an entry from the start, under an alias derived from it (`gpt-4o-mini` for
`openai:gpt-4o-mini`), without a row: the environment is its storage. Admins add entries, and
edit any entry's display name and parameters; an edit of an environment entry is stored as a row
with its alias, which wins over the derived values. The spec behind an alias never changes (an
alias means one model), so a stored row and an environment entry agree on it, or the environment
entry takes another alias.

Model text, as admins type it and assignments store it, reads three ways:

- `provider:model` (a colon): that spec;
- `vendor/model` (a slash, no colon): a bare OpenRouter id, run on the shared OPENROUTER_API_KEY;
- anything else: a catalog alias (aliases have neither, `ALIAS_PATTERN`).

A spec typed directly still gets the name and parameters of the catalog's entry for that spec
(the environment's entry first, then the first alias), so `DEFAULT_MODEL=openai:gpt-4o` and
`/setmodel coach gpt-4o` run with the same parameters.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.config import Settings
from bot.llm.parameters import NO_PARAMS, ModelParams
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec
from bot.quoting import quoted
from bot.storage.models import ModelCatalogRow

__all__ = [
    "ALIAS_PATTERN",
    "Catalog",
    "CatalogEntry",
    "ConfiguredModel",
    "Picked",
    "UnknownAliasError",
    "configured_models",
    "derive_alias",
]

log = logging.getLogger(__name__)

ALIAS_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
ALIAS_RULE = "1-32 of a-z 0-9 . _ -, starting with a letter or digit"


class UnknownAliasError(ValueError):
    """Model text that is neither a spec nor an OpenRouter id names no catalog entry."""

    def __init__(self, alias: str, known: Collection[str]) -> None:
        close = difflib.get_close_matches(alias.lower(), list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        listed = ", ".join(sorted(known)) or "(empty)"
        super().__init__(f"unknown alias {quoted(alias)}{hint} (catalog: {listed})")
        self.alias = alias
        self.suggestions = close


@dataclass(frozen=True, slots=True)
class ConfiguredModel:
    """A spec the environment names, with the variables that name it."""

    spec: ModelSpec
    named_in: tuple[str, ...]
    # In USER_MODELS (or, when that is empty, DEFAULT_MODEL or FALLBACK_MODELS).
    offered: bool


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    alias: str
    spec: ModelSpec
    display_name: str | None = None
    params: ModelParams = NO_PARAMS
    # As stored (`/catalog edit users=`); None: `default_offered`.
    offered: bool | None = None
    default_offered: bool = False
    # The environment variables naming its spec (empty for entries added at runtime).
    named_in: tuple[str, ...] = ()
    # Whether a row holds it (added, or an environment entry edited, at runtime).
    stored: bool = False
    updated_by: str | None = None
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.display_name or self.spec.model

    @property
    def offered_to_users(self) -> bool:
        return self.default_offered if self.offered is None else self.offered

    @property
    def label(self) -> str:
        """How answers show it: `GPT-4o mini (openai:gpt-4o-mini)`, or the spec alone when
        no display name was given."""
        return f"{self.display_name} ({self.spec})" if self.display_name else str(self.spec)

    def describe(self) -> str:
        """The entry as `/catalog add` arguments (the history's old/new text)."""
        parts = [str(self.spec)]
        if self.display_name is not None:
            parts.append(f'name="{self.display_name}"')
        parts += [f"{name}={value:g}" for name, value in self.params.items()]
        if self.offered is not None:
            parts.append(f"users={'yes' if self.offered else 'no'}")
        return " ".join(parts)

    def to_row(self, updated_by: str | None) -> ModelCatalogRow:
        return ModelCatalogRow(
            alias=self.alias,
            spec=str(self.spec),
            display_name=self.display_name,
            timeout=self.params.timeout,
            max_tokens=self.params.max_tokens,
            temperature=self.params.temperature,
            offered_to_users=self.offered,
            updated_by=updated_by,
        )


@dataclass(frozen=True, slots=True)
class Picked:
    """What a piece of model text means: its spec, and the catalog entry behind it if any."""

    text: str
    spec: ModelSpec
    entry: CatalogEntry | None = None

    @property
    def alias(self) -> str | None:
        return self.entry.alias if self.entry is not None else None

    @property
    def params(self) -> ModelParams:
        return self.entry.params if self.entry is not None else NO_PARAMS

    @property
    def label(self) -> str:
        return self.entry.label if self.entry is not None else str(self.spec)


def _clean(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    return cleaned.lstrip("-._")[:32].rstrip("-._")


def derive_alias(spec: ModelSpec, taken: Collection[str] = ()) -> str:
    """The alias an environment spec gets: its model's last path part, made alias-safe
    (`openrouter:openai/gpt-4o-mini` -> `gpt-4o-mini`), then `<provider>-<that>`, then `-2`..."""
    tail = spec.model.rstrip("/").rsplit("/", 1)[-1]
    base = _clean(tail) or spec.provider
    for candidate in (base, _clean(f"{spec.provider}-{tail}")):
        if candidate and candidate not in taken:
            return candidate
    n = 2
    while f"{base[:28]}-{n}" in taken:
        n += 1
    return f"{base[:28]}-{n}"


def configured_models(settings: Settings) -> list[ConfiguredModel]:
    """Every spec the environment names, in the order `/catalog` and `/model` show them."""
    order: list[ModelSpec] = []
    named: dict[ModelSpec, list[str]] = {}

    def add(raw: str, variable: str) -> None:
        spec = parse_spec(raw)
        if spec not in named:
            order.append(spec)
            named[spec] = []
        if variable not in named[spec]:
            named[spec].append(variable)

    add(settings.default_model, "DEFAULT_MODEL")
    for raw in settings.fallback_models:
        add(raw, "FALLBACK_MODELS")
    for raw in settings.user_models:
        add(raw, "USER_MODELS")
    for agent, raw in settings.agent_models.items():
        add(raw, f"AGENT_MODELS[{agent}]")
    for pipeline, raw in settings.pipeline_models.items():
        add(raw, f"PIPELINE_MODELS[{pipeline}]")
    if ":" in settings.local_model:  # a spec; an alias names an entry already there
        add(settings.local_model, "LOCAL_MODEL")
    menu = settings.user_models or [settings.default_model, *settings.fallback_models]
    offered = {parse_spec(raw) for raw in menu}
    return [ConfiguredModel(spec, tuple(named[spec]), spec in offered) for spec in order]


def _entry_from_row(row: ModelCatalogRow, base: CatalogEntry | None) -> CatalogEntry:
    return CatalogEntry(
        alias=row.alias,
        spec=parse_spec(row.spec),
        display_name=row.display_name,
        params=ModelParams(row.timeout, row.max_tokens, row.temperature),
        offered=row.offered_to_users,
        default_offered=base.default_offered if base is not None else False,
        named_in=base.named_in if base is not None else (),
        stored=True,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """Every entry, environment ones first (in configuration order), then added ones by alias."""

    entries: tuple[CatalogEntry, ...] = ()
    _by_alias: dict[str, CatalogEntry] = field(default_factory=dict, repr=False)
    _by_spec: dict[ModelSpec, CatalogEntry] = field(default_factory=dict, repr=False)
    # Whether any entry sets a parameter (without any, chains need no parameter wrappers).
    any_params: bool = False

    @classmethod
    def of(cls, entries: Iterable[CatalogEntry]) -> Catalog:
        listed = tuple(entries)
        by_alias = {e.alias: e for e in listed}
        by_spec: dict[ModelSpec, CatalogEntry] = {}
        # The environment's entry for a spec first, then the first alias.
        for entry in sorted(listed, key=lambda e: (not e.named_in, e.alias)):
            by_spec.setdefault(entry.spec, entry)
        return cls(listed, by_alias, by_spec, any(bool(e.params) for e in listed))

    @classmethod
    def build(
        cls, configured: Sequence[ConfiguredModel], rows: Sequence[ModelCatalogRow] = ()
    ) -> Catalog:
        stored = {row.alias: row for row in rows}
        taken: set[str] = set()
        entries: list[CatalogEntry] = []
        for model in configured:
            derived = _derive_for(model.spec, taken, stored)
            taken.add(derived)
            base = CatalogEntry(
                alias=derived,
                spec=model.spec,
                default_offered=model.offered,
                named_in=model.named_in,
            )
            row = stored.pop(derived, None)
            entries.append(_entry_from_row(row, base) if row is not None else base)
        for alias in sorted(stored):
            try:
                entries.append(_entry_from_row(stored[alias], None))
            except ModelSpecError as exc:  # a row no longer readable must not hide the others
                log.warning("catalog entry %s skipped: %s", alias, exc)
        return cls.of(entries)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, alias: str) -> CatalogEntry | None:
        return self._by_alias.get(alias.strip().lower())

    @property
    def aliases(self) -> list[str]:
        return [e.alias for e in self.entries]

    def for_spec(self, spec: ModelSpec) -> CatalogEntry | None:
        return self._by_spec.get(spec)

    def params_for(self, spec: ModelSpec) -> ModelParams | None:
        """The parameters a spec runs with when it is not chosen by alias (e.g. as a fallback)."""
        entry = self._by_spec.get(spec)
        return entry.params if entry is not None else None

    def offered(self) -> list[CatalogEntry]:
        """The entries users may pick with `/model`, in catalog order."""
        return [e for e in self.entries if e.offered_to_users]

    def interpret(self, text: str) -> Picked:
        """Model text as an alias, a spec or an OpenRouter id (see the module docstring).

        Raises `ModelSpecError` for a malformed spec, `UnknownAliasError` for an unknown alias.
        """
        raw = text.strip()
        if ":" in raw:
            spec = parse_spec(raw)
            return Picked(raw, spec, self._by_spec.get(spec))
        if "/" in raw:
            spec = ModelSpec("openrouter", raw)
            return Picked(raw, spec, self._by_spec.get(spec))
        entry = self._by_alias.get(raw.lower())
        if entry is None:
            raise UnknownAliasError(raw, self._by_alias)
        return Picked(raw, entry.spec, entry)

    def params_key(self) -> tuple[tuple[ModelSpec, ModelParams], ...]:
        """What the parameters of fallbacks depend on: changes when any entry's do."""
        return tuple((spec, entry.params) for spec, entry in self._by_spec.items())


def _derive_for(spec: ModelSpec, taken: set[str], stored: dict[str, ModelCatalogRow]) -> str:
    """The derived alias, skipping aliases a stored row holds for another model (a row for the
    same spec is this entry's edit)."""
    blocked = set(taken)
    while True:
        alias = derive_alias(spec, blocked)
        row = stored.get(alias)
        if row is None or row.spec == str(spec):
            return alias
        blocked.add(alias)
