"""Whether a model an admin names can run here, before anything is changed.

    checker = ModelChecker(settings, openrouter_models)
    picked, notes = await checker.check("fast", catalog)     # or raises ModelProblem

A model runs when its provider has a key (the variable is named otherwise), an `mlx:` model has
the local-model extra and its folder, and a bare OpenRouter id is in OpenRouter's list (the
closest ids are suggested otherwise; when the list cannot be fetched the id is taken, with a
note, as `/setmodel` always did: an outage must not make changing models impossible).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot.llm.local_runners.base import LOCAL_EXTRA_INSTALL
from bot.llm.specs import ModelSpec, ModelSpecError
from bot.quoting import quoted
from bot.services.model_catalog import Catalog, Picked, UnknownAliasError
from bot.services.openrouter_models import OpenRouterModels

__all__ = ["ModelChecker", "ModelProblem", "local_extra_installed"]


class ModelProblem(ValueError):
    """The model cannot be used; the message says why, in one line."""


def local_extra_installed() -> bool:
    return importlib.util.find_spec("mlx_lm") is not None


@dataclass(slots=True)
class ModelChecker:
    settings: Settings
    openrouter_models: OpenRouterModels | None = None
    local_available: Callable[[], bool] = field(default=local_extra_installed)

    async def check(self, text: str, catalog: Catalog) -> tuple[Picked, list[str]]:
        """What `text` names, and notes for the admin; raises `ModelProblem`."""
        try:
            picked = catalog.interpret(text)
        except UnknownAliasError as exc:
            raise ModelProblem(str(exc) + await self._openrouter_hint(text)) from None
        except ModelSpecError as exc:
            raise ModelProblem(str(exc)) from None
        # A catalog entry's OpenRouter id was checked when it was added (or is the operator's).
        notes = await self.check_spec(picked.spec, look_up=picked.entry is None)
        return picked, notes

    async def check_spec(self, spec: ModelSpec, *, look_up: bool = True) -> list[str]:
        problem = self.unusable(spec)
        if problem is not None:
            raise ModelProblem(problem)
        if spec.provider != "openrouter" or not look_up or self.openrouter_models is None:
            return []
        check = await self.openrouter_models.check(spec.model)
        if check.status == "missing":
            hint = (
                "Did you mean: " + ", ".join(check.suggestions) + "?"
                if check.suggestions
                else "No similar id found; see https://openrouter.ai/models"
            )
            raise ModelProblem(f"{quoted(spec.model)} is not in OpenRouter's model catalog. {hint}")
        if check.status == "unverified":
            return [
                "Note: OpenRouter's model list could not be fetched, so this id was not checked. "
                "If it is wrong, undo it with /rollback."
            ]
        return []

    def unusable(self, spec: ModelSpec) -> str | None:
        """Why `spec` cannot run on the operator's configuration, naming what to set; or None."""
        info = spec.info
        if info.needs_key and info.key_var and self.settings.api_key_for(spec.provider) is None:
            return f"{spec} needs {info.key_var}, which is not set (set it and restart the bot)"
        if spec.provider == "mlx":
            if not self.local_available():
                return f"{spec} needs the local-model extra: {LOCAL_EXTRA_INSTALL} in the clone"
            candidate = Path(spec.model).expanduser()
            folder = str(candidate) if candidate.is_absolute() else self.settings.mlx_model_path
            if not folder:
                return f"{spec} needs MLX_MODEL_PATH set to its model folder"
            if not Path(folder).is_dir():
                return f"{spec} needs its model folder, and {folder} is not a folder"
        return None

    async def _openrouter_hint(self, text: str) -> str:
        """For `claude-sonnet-4.5` typed as an alias: the OpenRouter ids it may mean."""
        if self.openrouter_models is None or self.settings.openrouter_api_key is None:
            return ""
        check = await self.openrouter_models.check(text)
        if check.status != "missing" or not check.suggestions:
            return ""
        return (
            "; OpenRouter ids name their vendor: did you mean " + ", ".join(check.suggestions) + "?"
        )
