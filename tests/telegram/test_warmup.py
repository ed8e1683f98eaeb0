"""The start-up steps that keep per-message cost flat: pinned response types, a frozen heap and a
young-generation threshold that lets reference counting do the work (bot/telegram/warmup.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from aiogram.methods import SendMessage
from aiogram.methods.base import Response

from bot.telegram import warmup


@pytest.fixture
def restore_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_exempts_the_heap_and_raises_only_the_young_threshold(
    restore_collector: None,
) -> None:
    gc.set_threshold(700, 7, 9)
    warmup.freeze_startup_heap()
    assert gc.get_freeze_count() > 1000  # the test process's own modules, at least
    assert gc.get_threshold() == (warmup.YOUNG_GENERATION_THRESHOLD, 7, 9)


def test_cyclic_garbage_is_still_collected_without_an_explicit_collect(
    restore_collector: None,
) -> None:
    warmup.freeze_startup_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    alive = weakref.ref(a)
    del a, b
    assert alive() is not None
    # Allocate (and keep) enough tracked objects to cross the young threshold twice over: the
    # collector must run on its own and free the cycle.
    kept = [[] for _ in range(2 * warmup.YOUNG_GENERATION_THRESHOLD)]
    assert alive() is None
    assert len(kept) == 2 * warmup.YOUNG_GENERATION_THRESHOLD


def test_response_types_are_pinned_so_the_collector_cannot_drop_them() -> None:
    warmup.pin_response_types()
    built = weakref.ref(Response[SendMessage.__returning__])  # type: ignore[name-defined]
    gc.collect()
    assert built() is not None
