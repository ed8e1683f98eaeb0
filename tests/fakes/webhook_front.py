"""A load balancer's front on 127.0.0.1: one webhook address for several bot replicas.

    async with WebhookFront([port_a, port_b], route="chat") as front:
        env["WEBHOOK_URL"] = front.url        # every replica registers the same address

`route="chat"` sends each update to the replica its chat id hashes to (a sticky balancer: one
chat's updates go to one replica while the set of replicas is unchanged); `route="round-robin"`
spreads them in turn, as a plain balancer does (the bot's per-chat order then rests on Redis).
The body and the secret header go through untouched; the replica's status comes back.
"""

from __future__ import annotations

import itertools
import json
from types import TracebackType

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from bot.telegram.chat_queue import update_chat_id
from tests.fakes.ports import free_port

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookFront:
    def __init__(self, ports: list[int], *, route: str = "chat") -> None:
        if not ports:
            raise ValueError("a front needs at least one replica")
        if route not in ("chat", "round-robin"):
            raise ValueError(f"unknown route {route!r}")
        self.targets = [f"http://127.0.0.1:{port}/webhook" for port in ports]
        self.route = route
        self.forwarded = [0] * len(ports)
        self._turn = itertools.cycle(range(len(ports)))
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def __aenter__(self) -> WebhookFront:
        self._client = ClientSession(
            timeout=ClientTimeout(total=60), connector=TCPConnector(limit=0)
        )
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post("/webhook", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def pick(self, body: bytes) -> int:
        if self.route == "round-robin" or len(self.targets) == 1:
            return next(self._turn)
        try:
            chat = update_chat_id(json.loads(body)) or 0
        except ValueError:
            chat = 0
        return chat % len(self.targets)

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        index = self.pick(body)
        headers = {"Content-Type": "application/json"}
        secret = request.headers.get(SECRET_HEADER)
        if secret is not None:
            headers[SECRET_HEADER] = secret
        try:
            async with self._client.post(self.targets[index], data=body, headers=headers) as resp:
                answer = await resp.read()
                status = resp.status
        except OSError:
            return web.Response(status=502)
        self.forwarded[index] += 1
        return web.Response(status=status, body=answer)
