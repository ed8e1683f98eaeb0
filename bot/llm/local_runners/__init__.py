"""Runners behind the `mlx:` provider: what loads a local model folder and generates from it.

`base` defines the two small protocols a runner implements, `mlx_lm_runner` is the default runner
(mlx-lm, imported only when a model is loaded), `pool` keeps loaded models shared per folder, each
with the one thread that runs it. The registry and the provider are in `bot.llm.local`.
"""

from bot.llm.local_runners.base import GenerationStep, LocalModel, LocalRunner

__all__ = ["GenerationStep", "LocalModel", "LocalRunner"]
