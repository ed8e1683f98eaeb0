"""Fixtures: a loopback Langfuse (`OtlpReceiver`) and tracings built from real settings.

Every tracing gets its own public key (the SDK keeps one client per key) and is closed after the
test; batching is tight (50 ms) so exports arrive within a test's time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bot.config import Settings
from bot.observability.tracing import Tracing
from tests.fakes.otlp_receiver import OtlpReceiver

FLUSH_INTERVAL = 0.05


def make_settings(base_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "langfuse_public_key": f"pk-lf-test-{uuid.uuid4().hex[:12]}",
        "langfuse_secret_key": f"sk-lf-{uuid.uuid4().hex}",
    }
    if base_url is not None:
        values["langfuse_base_url"] = base_url
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


TracingFactory = Callable[..., Tracing]


@pytest.fixture
async def make_tracing() -> AsyncIterator[TracingFactory]:
    """`make_tracing(settings, **options)`; every tracing made is closed after the test."""
    made: list[Tracing] = []

    def factory(settings: Settings, **options: Any) -> Tracing:
        options.setdefault("flush_interval", FLUSH_INTERVAL)
        options.setdefault("export_timeout", 1)
        tracing = Tracing.from_settings(settings, **options)
        made.append(tracing)
        return tracing

    yield factory
    for tracing in made:
        await tracing.aclose(timeout=5)
