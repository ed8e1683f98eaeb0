"""The benchmark's load-balancer front (`tests.fakes.webhook_front`): what `e2e_load --replicas`
relies on to share one webhook address between bot processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import ClientSession, web

from tests.fakes.ports import free_port
from tests.fakes.webhook_front import SECRET_HEADER, WebhookFront


@asynccontextmanager
async def replica(seen: list[tuple[int, str | None]]) -> AsyncIterator[int]:
    async def take(request: web.Request) -> web.Response:
        update = await request.json()
        seen.append((update["message"]["chat"]["id"], request.headers.get(SECRET_HEADER)))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/webhook", take)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def update(chat: int) -> str:
    return json.dumps({"update_id": chat, "message": {"chat": {"id": chat}, "text": "hi"}})


async def post_all(url: str, chats: list[int]) -> list[int]:
    async with ClientSession() as session:
        statuses = []
        for chat in chats:
            async with session.post(
                url, data=update(chat), headers={SECRET_HEADER: "s3cret"}
            ) as resp:
                statuses.append(resp.status)
        return statuses


async def test_round_robin_spreads_updates_in_turn_and_keeps_the_secret() -> None:
    a: list[tuple[int, str | None]] = []
    b: list[tuple[int, str | None]] = []
    async with (
        replica(a) as port_a,
        replica(b) as port_b,
        WebhookFront([port_a, port_b], route="round-robin") as front,
    ):
        assert await post_all(front.url, [1, 1, 2, 2]) == [200] * 4
        assert front.forwarded == [2, 2]
    assert [chat for chat, _ in a] == [1, 2]
    assert [chat for chat, _ in b] == [1, 2]
    assert {secret for _, secret in a + b} == {"s3cret"}


async def test_chat_route_keeps_each_chat_on_one_replica() -> None:
    a: list[tuple[int, str | None]] = []
    b: list[tuple[int, str | None]] = []
    async with (
        replica(a) as port_a,
        replica(b) as port_b,
        WebhookFront([port_a, port_b], route="chat") as front,
    ):
        await post_all(front.url, [10, 11, 10, 11, 12])
    assert [chat for chat, _ in a] == [10, 10, 12]
    assert [chat for chat, _ in b] == [11, 11]


async def test_a_replica_that_is_down_answers_502() -> None:
    async with WebhookFront([free_port()]) as front:
        assert await post_all(front.url, [1]) == [502]
