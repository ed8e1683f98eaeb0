"""Run the real bot (`python -m bot`) as a child process, the way an operator would.

    proc = BotProcess(env, log_path)
    await proc.start()
    await proc.wait_healthy()
    ...
    code = await proc.stop()   # SIGTERM, then wait for a clean exit

The environment is exactly what the bot reads (DESIGN.md's variables); nothing is injected in
process. The child's output goes to a log file that `tail()` shows when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import IO

import aiohttp

REPO = Path(__file__).resolve().parents[2]

# Variables of the developer's shell that must not leak into the bot under test.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")


def clean_env(**values: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    env.update(values)
    return env


class BotProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, port: int | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port if port is not None else int(env.get("WEBHOOK_PORT", "8080"))
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=self.env,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"bot exited with {self.process.returncode}:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"bot not healthy after {timeout} s:\n{self.tail()}")

    def terminate(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; kill after `timeout`. Returns the exit code."""
        if self.process is None:
            return 0
        self.terminate()
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def kill(self) -> int:
        """SIGKILL (no shutdown at all: a crash, an OOM kill) and wait. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.returncode is None:
            self.process.kill()
        code = await self.process.wait()
        self._close_log()
        return code

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
