"""The direct export's batching: batches leave full or on time, a flush waits for what was
added, a hanging Langfuse blocks no span being added and bounds what waits."""

from __future__ import annotations

import threading
import time

from bot.observability.span_batches import SpanBatches


class Sink:
    def __init__(self, *, taken: bool = True) -> None:
        self.batches: list[list[bytes]] = []
        self.taken = taken
        self.release = threading.Event()
        self.release.set()
        self.calls = threading.Semaphore(0)

    def __call__(self, spans: list[bytes]) -> bool:
        self.calls.release()
        self.release.wait()
        self.batches.append(spans)
        return self.taken


def test_a_full_batch_leaves_at_once_and_a_partial_one_on_time() -> None:
    sink = Sink()
    batches = SpanBatches(sink, flush_at=3, flush_interval=60)
    for n in range(7):
        batches.add(b"%d" % n)
    assert sink.calls.acquire(timeout=2)
    assert sink.calls.acquire(timeout=2)
    time.sleep(0.05)
    assert [len(b) for b in sink.batches] == [3, 3]  # the 7th waits for its interval
    assert batches.flush(timeout=2)
    assert [b"".join(b) for b in sink.batches] == [b"012", b"345", b"6"]
    assert batches.shutdown(timeout=2)

    timed = Sink()
    on_time = SpanBatches(timed, flush_at=100, flush_interval=0.05)
    on_time.add(b"a")
    assert timed.calls.acquire(timeout=2)  # no flush asked: the interval sent it
    assert on_time.shutdown(timeout=2)
    assert timed.batches == [[b"a"]]


def test_a_request_stays_under_its_size() -> None:
    sink = Sink()
    batches = SpanBatches(sink, flush_at=100, flush_interval=60, max_request_bytes=10)
    for _ in range(5):
        batches.add(b"x" * 4)
    assert batches.flush(timeout=2)
    assert [len(b) for b in sink.batches] == [2, 2, 1]


def test_a_hanging_langfuse_blocks_no_add_and_bounds_the_queue() -> None:
    sink = Sink(taken=False)
    sink.release.clear()  # the first request hangs
    batches = SpanBatches(sink, flush_at=1, flush_interval=60, max_queue=10)
    batches.add(b"first")
    assert sink.calls.acquire(timeout=2)
    started = time.monotonic()
    for _ in range(50):
        batches.add(b"more")
    assert time.monotonic() - started < 0.5
    assert batches.dropped == 40  # 10 wait, the rest are counted and dropped
    assert not batches.flush(timeout=0.2)  # cannot finish while Langfuse hangs
    sink.release.set()
    assert batches.flush(timeout=5)
    assert batches.failed == 11  # Langfuse refused each request
    assert batches.shutdown(timeout=2)
