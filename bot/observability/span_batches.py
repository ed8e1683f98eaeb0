"""Encoded spans, batched and sent by one thread: the export process's BatchSpanProcessor.

The same policy as OpenTelemetry's: a batch leaves when it holds `flush_at` spans or
`flush_interval` seconds after the last one left; at most `max_queue` spans wait, and past that
new spans are dropped and counted (a hanging Langfuse must not grow the export process without
bound; the bot's pipe and its own buffer come first). A request also stays under
`max_request_bytes`. Sending happens on the thread, so a slow or hanging Langfuse delays no
record being read; its CPU (gzip, HTTP) mostly runs outside the GIL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_QUEUE = 2048  # OpenTelemetry's default max_queue_size
MAX_REQUEST_BYTES = 4 << 20


class SpanBatches:
    def __init__(
        self,
        send: Callable[[list[bytes]], bool],
        *,
        flush_at: int = 512,
        flush_interval: float = 5.0,
        max_queue: int = MAX_QUEUE,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        """`send(spans)` sends one request of encoded spans; True when it was taken."""
        self._send = send
        self._flush_at = max(1, flush_at)
        self._interval = flush_interval
        self._max_queue = max_queue
        self._max_bytes = max_request_bytes
        self._queue: deque[bytes] = deque()
        self._lock = threading.Condition()
        self._added = 0  # spans queued so far
        self._handled = 0  # of those, sent or given up on
        self._flush_until = 0  # send without waiting until `_handled` reaches this
        self._closing = False
        self.dropped = 0
        self.failed = 0  # spans in requests Langfuse did not take
        self._thread = threading.Thread(target=self._run, name="span-batches", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Spans waiting to be sent."""
        with self._lock:
            return len(self._queue)

    def add(self, span: bytes) -> None:
        with self._lock:
            if self._closing:
                return
            if len(self._queue) >= self._max_queue:
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("tracing: Langfuse is not keeping up; dropping spans")
                self._handled += 1
                self._added += 1
                return
            self._queue.append(span)
            self._added += 1
            if len(self._queue) >= self._flush_at:
                self._lock.notify()

    def flush(self, timeout: float) -> bool:
        """Blocking: every span added so far sent (or given up on) within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._added
            self._flush_until = max(self._flush_until, target)
            self._lock.notify()
            while self._handled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._lock.wait(remaining)
        return True

    def shutdown(self, timeout: float) -> bool:
        """Send what is queued (within `timeout`), then stop the thread."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout=max(0.0, timeout))
        return flushed

    def _next_batch(self) -> list[bytes] | None:
        """Under the lock: wait for a batch that is due; None when closing with none left."""
        deadline = time.monotonic() + self._interval
        while True:
            queued = len(self._queue)
            now = time.monotonic()
            if queued and (
                queued >= self._flush_at
                or self._handled < self._flush_until
                or self._closing
                or now >= deadline
            ):
                break
            if self._closing:
                return None
            if now >= deadline:
                deadline = now + self._interval
            self._lock.wait(deadline - now)
        batch: list[bytes] = []
        size = 0
        while self._queue and len(batch) < self._flush_at:
            span = self._queue[0]
            if batch and size + len(span) > self._max_bytes:
                break
            batch.append(self._queue.popleft())
            size += len(span)
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                taken = self._send(batch)
            except Exception as exc:
                log.warning("tracing: sending spans failed (%s)", type(exc).__name__)
                taken = False
            with self._lock:
                if not taken:
                    self.failed += len(batch)
                self._handled += len(batch)
                self._lock.notify_all()
