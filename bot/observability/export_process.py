"""Tracing's export process: the Langfuse SDK runs beside the bot, not in it.

Measured (decision 0019): with the SDK in the bot, a traced message cost twice the CPU of an
untraced one, half of it on the event loop (the SDK's span objects, attribute serialization,
propagation, media scan) and the rest in its export thread under the same GIL (Langfuse's span
transform, the export-time scrub, OTLP encoding, gzip, HTTP). Now the bot writes each record as
one marshal frame to a pipe, and `python -m bot.observability.export_process` makes the Langfuse
observations from them (`bot.observability.replay`) and exports them.

The bot's side (`SpanPipe`) never blocks the loop: frames are buffered and written together
every `WRITE_INTERVAL` (50 ms) on a non-blocking pipe; when the pipe is full they wait in memory
(bounded, then dropped and counted). `flush` and `close` run in a daemon thread under the
caller's deadline; a child that does not finish by then is killed and reaped.

Protocol: stdin carries frames, each a 4-byte big-endian length and a `marshal` payload; the first
is the configuration (keys, URL, batching, the secrets to scrub). stdout answers each
`("flush", n)` with the line `n`. EOF on stdin (the bot closed it, or died) means: export what is
left, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
# The pipe holds this much before the bot buffers (Linux allows 1 MiB to anyone).
PIPE_BYTES = 1 << 20
# What the bot keeps in memory when the export process does not keep up, before it drops.
MAX_PENDING_BYTES = 64 << 20
# Records wait this long (seconds) to be written together.
WRITE_INTERVAL = 0.05


def _frame(record: Any) -> bytes:
    payload = marshal.dumps(record)
    return _LENGTH.pack(len(payload)) + payload


class SpanPipe:
    """The bot's end: starts the export process and hands it records."""

    def __init__(self, config: dict[str, Any]) -> None:
        env = dict(os.environ)
        # The child imports this package wherever the bot runs from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bot.observability.export_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            # Its own session: a Ctrl-C meant for the bot does not kill the export mid-batch;
            # it ends when the bot closes the pipe.
            start_new_session=True,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._stdin: IO[bytes] = self._process.stdin
        self._stdout: IO[bytes] = self._process.stdout
        self._fd = self._stdin.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = bytearray()
        # The loop a write is scheduled on (None: none is).
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._broken = False
        self._closed = False
        self._flushes = 0
        self.sent = 0
        self.dropped = 0
        self._pending.extend(_frame(config))
        self._write_some()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self._broken and self._process.poll() is None

    # --- records (the loop) ---

    def send(self, record: Any) -> None:
        """Queue `record` (plain data: tuples, lists, dicts, str, numbers, None)."""
        data = _frame(record)
        with self._lock:
            if self._broken or self._closed:
                return
            if len(self._pending) + len(data) > MAX_PENDING_BYTES:
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("tracing: the export process is not keeping up; dropping spans")
                return
            self._pending.extend(data)
            self.sent += 1
        self._schedule()

    def _schedule(self) -> None:
        """Write within WRITE_INTERVAL, once for every record made meanwhile: each write is a
        syscall that wakes the child, and once per loop iteration they were a tenth of the
        bot's CPU (py-spy, 30 msg/s). The SDK batches for seconds anyway."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            waiting = self._scheduled_on
            if waiting is not None and not waiting.is_closed():
                return  # a write is due on a live loop
            self._scheduled_on = loop
        if loop is None:
            self._write_pending()  # no loop here (a thread, start-up): write now
        else:
            loop.call_later(WRITE_INTERVAL, self._write_pending)

    def _write_pending(self) -> None:
        with self._lock:
            self._scheduled_on = None
        if self._write_some():
            return
        # The pipe is full: try again shortly, never waiting on the loop. Off a loop, the next
        # record, flush or close writes it.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        with self._lock:
            if self._scheduled_on is not None:
                return
            self._scheduled_on = loop
        loop.call_later(WRITE_INTERVAL, self._write_pending)

    def _write_some(self) -> bool:
        """Write what the pipe takes now; True when nothing is left."""
        with self._lock:
            while self._pending and not self._broken:
                try:
                    written = os.write(self._fd, self._pending)
                except BlockingIOError:
                    return False
                except OSError:
                    self._broken = True
                    self._pending.clear()
                    log.error("tracing: the export process is gone; spans are no longer exported")
                    return True
                del self._pending[:written]
            return True

    def _drain(self, deadline: float) -> bool:
        """Write everything pending, waiting for the pipe (not on the loop) until `deadline`."""
        while not self._write_some():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(OSError, ValueError):
                select.select([], [self._fd], [], min(remaining, 0.1))
        return not self._broken

    # --- flush and close (a thread, under a deadline) ---

    def flush(self, timeout: float) -> bool:
        """Blocking: everything sent so far reached Langfuse (or the export gave up)."""
        deadline = time.monotonic() + timeout
        with self._flush_lock:
            self._flushes += 1
            token = self._flushes
            with self._lock:
                if self._broken or self._closed:
                    return False
                self._pending.extend(_frame(("flush", token)))
            if not self._drain(deadline):
                return False
            return self._await_ack(token, deadline)

    def _await_ack(self, token: int, deadline: float) -> bool:
        fd = self._stdout.fileno()
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.1))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return False  # the child is gone
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if any(line.strip() == str(token).encode() for line in lines):
                return True

    def close(self, timeout: float) -> bool:
        """Blocking: hand over what is left, let the child export it and exit; past `timeout`
        the child is killed. Always reaps it. True if it finished in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        drained = self._drain(deadline)
        with contextlib.suppress(OSError):
            self._stdin.close()
        finished = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
            finished = self._process.returncode == 0
        self.kill()
        return drained and finished

    def kill(self) -> None:
        """End the child now (a no-op once it has exited) and reap it."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        for stream in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------- the child


def _read_frames(stream: IO[bytes]) -> Iterable[Any]:
    while True:
        head = stream.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        payload = stream.read(length)
        if len(payload) < length:
            return
        yield marshal.loads(payload)


def main() -> int:
    from bot.observability.export_child import run

    return run(_read_frames(sys.stdin.buffer), sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
