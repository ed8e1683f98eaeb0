"""`/catalog`: the bot's named models, listed, shown, added, edited and removed from chat.

    /catalog
    /catalog show <alias>
    /catalog add <alias> <spec> [name="<display name>"] [timeout=<s>] [max_tokens=<n>]
                 [temperature=<t>] [users=yes|no]
    /catalog edit <alias> <key>=<value> ...      (the same keys; `key=` clears one)
    /catalog remove <alias>                      (refused while anything uses it)

Every change is checked before anything is written (the alias's syntax and uniqueness, the
spec's provider key, an OpenRouter id against OpenRouter's list, each value), then stored,
recorded in the history and announced to the other replicas like an assignment.
"""

from __future__ import annotations

import dataclasses
import logging

from bot.config import Settings
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec
from bot.quoting import quoted
from bot.services.command_args import OptionError, parse_options, split_args
from bot.services.command_replies import STORAGE_PROBLEM, outcome_notes, when
from bot.services.model_catalog import (
    ALIAS_PATTERN,
    ALIAS_RULE,
    CatalogEntry,
    UnknownAliasError,
)
from bot.services.model_checks import ModelChecker, ModelProblem
from bot.services.model_config import ModelConfigService
from bot.services.model_levels import ConfigSnapshot
from bot.storage.repositories import StorageError

__all__ = ["CATALOG_USAGE", "CatalogCommands", "uses_of"]

log = logging.getLogger(__name__)

CATALOG_USAGE = """\
Usage:
/catalog - every entry
/catalog show <alias>
/catalog add <alias> <provider:model> [name="<display name>"] [timeout=<s>] [max_tokens=<n>] \
[temperature=<t>] [users=yes|no]
/catalog edit <alias> <key>=<value> ... (key= clears one)
/catalog remove <alias>"""


def uses_of(entry: CatalogEntry, snapshot: ConfigSnapshot) -> list[str]:
    """What uses an entry: the variables naming its spec, and the targets assigned its alias."""
    targets = [
        target
        for target, row in sorted(snapshot.assignments.items())
        if row.model_id.strip().lower() == entry.alias
    ]
    return [*entry.named_in, *targets]


def _params_text(entry: CatalogEntry) -> str:
    parts = [f"{name}={value:g}" for name, value in entry.params.items()]
    return " ".join(parts) or "agent defaults"


def _with(entry: CatalogEntry, values: dict[str, object]) -> CatalogEntry:
    params = entry.params
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key == "name":
            changes["display_name"] = value
        elif key == "users":
            changes["offered"] = value
        else:
            params = dataclasses.replace(params, **{key: value})  # type: ignore[arg-type]
    return dataclasses.replace(entry, params=params, **changes)  # type: ignore[arg-type]


class CatalogCommands:
    def __init__(
        self, settings: Settings, model_config: ModelConfigService, checker: ModelChecker
    ) -> None:
        self.settings = settings
        self.model_config = model_config
        self.checker = checker

    async def handle(self, args: str, *, by: str) -> tuple[str, bool]:
        """(answer, whether it reads best in monospace) for `/catalog <args>`."""
        try:
            words = split_args(args)
        except OptionError as exc:
            return f"Not changed: {exc}", False
        sub = words[0].lower() if words else ""
        try:
            if not words:
                return await self.listing(), True
            if sub == "show" and len(words) == 2:
                return await self.show(words[1]), True
            if sub == "add" and len(words) >= 3:
                return await self.add(words[1], words[2], words[3:], by=by), False
            if sub == "edit" and len(words) >= 3:
                return await self.edit(words[1], words[2:], by=by), False
            if sub == "remove" and len(words) == 2:
                return await self.remove(words[1], by=by), False
        except StorageError as exc:
            log.error("/catalog %s by %s failed: %s", sub, by, exc)
            return STORAGE_PROBLEM, False
        return CATALOG_USAGE, False

    async def listing(self) -> str:
        snapshot = await self.model_config.snapshot()
        entries = list(snapshot.catalog)
        if not entries:
            return "The catalog is empty."
        width = max(len(e.alias) for e in entries)
        lines = []
        for entry in entries:
            used = ", ".join(uses_of(entry, snapshot)) or "nothing"
            users = "yes" if entry.offered_to_users else "no"
            lines.append(
                f"{entry.alias:<{width}}  {entry.label}  {_params_text(entry)}  users: {users}"
                f"  used by: {used}"
            )
        return "\n".join(lines)

    async def show(self, alias: str) -> str:
        snapshot = await self.model_config.snapshot()
        entry = snapshot.catalog.get(alias)
        if entry is None:
            return str(UnknownAliasError(alias, snapshot.catalog.aliases)).capitalize()
        takes = entry.spec.info.takes
        lines = [f"{entry.alias}: {entry.name}", f"  spec: {entry.spec}"]
        values = dict(entry.params.items())
        for name, unit in (("timeout", " s"), ("max_tokens", ""), ("temperature", "")):
            if name not in values:
                lines.append(f"  {name}: the agent's own")
            elif name not in takes:
                lines.append(
                    f"  {name}: {values[name]:g}{unit} (not sent: {entry.spec.provider} takes none)"
                )
            else:
                lines.append(f"  {name}: {values[name]:g}{unit}")
        default = " (the default)" if entry.offered is None else ""
        lines.append(f"  offered to users: {'yes' if entry.offered_to_users else 'no'}{default}")
        lines.append(f"  used by: {', '.join(uses_of(entry, snapshot)) or 'nothing'}")
        if entry.stored and entry.updated_at is not None:
            lines.append(f"  changed by {entry.updated_by or 'unknown'}, {when(entry.updated_at)}")
        elif entry.named_in:
            lines.append("  from the environment")
        return "\n".join(lines)

    async def add(self, alias: str, spec_text: str, words: list[str], *, by: str) -> str:
        alias = alias.lower()
        if not ALIAS_PATTERN.fullmatch(alias):
            return f"Not changed: alias {quoted(alias)} must be {ALIAS_RULE}"
        snapshot = await self.model_config.snapshot()
        existing = snapshot.catalog.get(alias)
        if existing is not None:
            return (
                f"Not changed: {alias} is already in the catalog ({existing.spec}); change it "
                f"with /catalog edit {alias} <key>=<value>"
            )
        try:
            spec = self._spec(spec_text)
            options = parse_options(words)
            entry = _with(CatalogEntry(alias, spec), options.values)
            notes = await self.checker.check_spec(spec)
        except (ModelSpecError, OptionError, ModelProblem) as exc:
            return f"Not changed: {exc}"
        change = await self.model_config.save_entry(entry, by, previous=None)
        saved = change.entry or entry
        users = "offered to users" if saved.offered_to_users else "not offered to users"
        lines = [
            f"Added {alias}: {saved.label}, {_params_text(saved)}, {users}. "
            f"Assign it with /setmodel <target> {alias}."
        ]
        lines.extend(outcome_notes(self.settings, change))
        lines.extend(notes)
        return "\n".join(lines)

    async def edit(self, alias: str, words: list[str], *, by: str) -> str:
        snapshot = await self.model_config.snapshot()
        entry = snapshot.catalog.get(alias)
        if entry is None:
            return f"Not changed: {UnknownAliasError(alias, snapshot.catalog.aliases)}"
        try:
            options = parse_options(words)
        except OptionError as exc:
            return f"Not changed: {exc}"
        edited = _with(entry, options.values)
        if edited.describe() == entry.describe():
            return f"Nothing changed: {entry.alias} already has those values."
        change = await self.model_config.save_entry(edited, by, previous=entry)
        saved = change.entry or edited
        users = "offered to users" if saved.offered_to_users else "not offered to users"
        lines = [f"{saved.alias} is now {saved.label}, {_params_text(saved)}, {users}."]
        used = uses_of(saved, snapshot)
        if used:
            lines.append(f"Used by: {', '.join(used)}.")
        lines.extend(outcome_notes(self.settings, change))
        return "\n".join(lines)

    async def remove(self, alias: str, *, by: str) -> str:
        snapshot = await self.model_config.snapshot()
        entry = snapshot.catalog.get(alias)
        if entry is None:
            return f"Not changed: {UnknownAliasError(alias, snapshot.catalog.aliases)}"
        if entry.named_in:
            return (
                f"Not changed: {entry.alias} is named in {', '.join(entry.named_in)}; take it "
                "out of the environment (.env) first"
            )
        used = uses_of(entry, snapshot)
        if used:
            return (
                f"Not changed: {entry.alias} is in use by {', '.join(used)}; assign those "
                "another model (/setmodel) or reset them (/resetmodel) first"
            )
        change = await self.model_config.remove_entry(entry, by)
        lines = [f"Removed {entry.alias} ({entry.spec})."]
        lines.extend(outcome_notes(self.settings, change))
        return "\n".join(lines)

    @staticmethod
    def _spec(text: str) -> ModelSpec:
        """A spec as `/catalog add` takes it: `provider:model`, or a bare OpenRouter id."""
        raw = text.strip()
        if ":" not in raw and "/" in raw:
            return ModelSpec("openrouter", raw)
        return parse_spec(raw)
