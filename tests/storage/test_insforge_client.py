"""The InsForge client against the loopback InsForge: what InsForge rejects, how each answer maps
to a StorageError, and which requests are retried."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import httpx
import pytest

from bot.storage.insforge_client import InsForgeClient, eq, in_, is_, neq
from bot.storage.repositories import (
    StorageConfigError,
    StorageConflict,
    StorageNotFound,
    StorageRejected,
    StorageUnavailable,
)
from tests.fakes.insforge_server import FakeInsForge
from tests.storage.conftest import Sleeps


@pytest.fixture
async def client(fake_insforge: FakeInsForge, sleeps: Sleeps) -> InsForgeClient:
    made = InsForgeClient(
        fake_insforge.url, fake_insforge.api_key, timeout=1.0, max_retries=2, sleep=sleeps
    )
    yield made  # type: ignore[misc]
    await made.aclose()


async def _raw(fake: FakeInsForge, method: str, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=fake.url, headers={"Authorization": f"Bearer {fake.api_key}"}
    ) as raw:
        return await raw.request(method, path, **kwargs)  # type: ignore[arg-type]


# --- what InsForge rejects, on the wire and as errors ---


async def test_unknown_column_in_a_body_is_pgrst204(
    fake_insforge: FakeInsForge, client: InsForgeClient
) -> None:
    response = await _raw(
        fake_insforge,
        "POST",
        "/api/database/records/messages",
        json=[{"chat_id": 1, "role": "user", "text": "x", "colour": "red"}],
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "PGRST204"
    assert set(body) == {"code", "message", "details", "hint"}
    assert "'colour'" in body["message"]

    with pytest.raises(StorageRejected) as caught:
        await client.insert("messages", {"chat_id": 1, "role": "user", "text": "x", "colour": 1})
    assert caught.value.status == 400
    assert caught.value.code == "PGRST204"
    assert "colour" in str(caught.value)


async def test_unknown_column_in_a_filter_is_42703(client: InsForgeClient) -> None:
    with pytest.raises(StorageRejected) as caught:
        await client.select("messages", {"colour": eq("red")})
    assert (caught.value.status, caught.value.code) == (400, "42703")
    with pytest.raises(StorageRejected) as caught:
        await client.select("messages", order="colour.desc")
    assert caught.value.code == "42703"


async def test_bad_filter_is_pgrst100(fake_insforge: FakeInsForge, client: InsForgeClient) -> None:
    response = await _raw(
        fake_insforge, "GET", "/api/database/records/messages", params={"chat_id": "equals.5"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST100"
    with pytest.raises(StorageRejected) as caught:
        await client.select("messages", {"chat_id": "5"})
    assert caught.value.code == "PGRST100"


async def test_unique_violation_is_a_409_conflict(
    fake_insforge: FakeInsForge, client: InsForgeClient
) -> None:
    row = {"agent_name": "coach", "model_id": "a/b"}
    await client.insert("agent_model_config", row)
    response = await _raw(
        fake_insforge, "POST", "/api/database/records/agent_model_config", json=[row]
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "23505"
    assert "agent_name" in body["details"]
    with pytest.raises(StorageConflict) as caught:
        await client.insert("agent_model_config", row)
    assert (caught.value.status, caught.value.code) == (409, "23505")
    # A conflict is the request's fault: it is not retried.
    assert sum(1 for r in fake_insforge.requests if r[0] == "POST") == 3


async def test_unknown_table_says_to_migrate(client: InsForgeClient) -> None:
    with pytest.raises(StorageNotFound, match="python -m bot migrate"):
        await client.select("no_such_table")


async def test_a_rejected_key_is_a_configuration_error_naming_the_variable(
    fake_insforge: FakeInsForge,
) -> None:
    response = await _raw(
        fake_insforge,
        "GET",
        "/api/database/records/messages",
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert set(response.json()) >= {"error", "message", "statusCode"}

    wrong_key = "sk-wrong-insforge-key-123456"
    bad = InsForgeClient(fake_insforge.url, wrong_key)
    try:
        with pytest.raises(StorageConfigError) as caught:
            await bad.select("messages")
    finally:
        await bad.aclose()
    assert "INSFORGE_API_KEY" in str(caught.value)
    assert wrong_key not in str(caught.value)
    assert wrong_key not in repr(bad)
    # Not retried: one request only.
    assert len([r for r in fake_insforge.requests if r[0] == "GET"]) == 2


# --- filters, ordering, paging, select ---


async def test_postgrest_filters(client: InsForgeClient) -> None:
    rows = [
        {"chat_id": 7, "role": "user", "text": "Alpha", "pipeline": "support"},
        {"chat_id": 7, "role": "assistant", "text": "beta, gamma", "pipeline": None},
        {"chat_id": 7, "role": "user", "text": "Gamma", "pipeline": "learn"},
        {"chat_id": 8, "role": "user", "text": "other", "pipeline": "support"},
    ]
    inserted = await client.insert("messages", rows)
    ids = [row["id"] for row in inserted]

    async def texts(filters: list[tuple[str, str]], **kw: object) -> list[str]:
        found = await client.select("messages", filters, order="id.asc", **kw)  # type: ignore[arg-type]
        return [row["text"] for row in found]

    seven = ("chat_id", eq(7))
    assert await texts([seven]) == ["Alpha", "beta, gamma", "Gamma"]
    assert await texts([seven, ("role", neq("user"))]) == ["beta, gamma"]
    assert await texts([("id", f"gt.{ids[0]}"), ("id", f"lte.{ids[2]}")]) == [
        "beta, gamma",
        "Gamma",
    ]
    assert await texts([("id", f"gte.{ids[3]}")]) == ["other"]
    assert await texts([("id", f"lt.{ids[1]}")]) == ["Alpha"]
    assert await texts([("pipeline", is_(None))]) == ["beta, gamma"]
    assert await texts([("pipeline", "not.is.null"), seven]) == ["Alpha", "Gamma"]
    assert await texts([("text", in_(["Alpha", "beta, gamma"]))]) == ["Alpha", "beta, gamma"]
    assert await texts([("text", "like.*amma")]) == ["beta, gamma", "Gamma"]
    assert await texts([("text", "ilike.gamma*")]) == ["Gamma"]
    assert await texts([seven], limit=1, offset=1) == ["beta, gamma"]
    newest = await client.select("messages", [seven], order="id.desc", limit=2, select="id,text")
    assert newest == [{"id": ids[2], "text": "Gamma"}, {"id": ids[1], "text": "beta, gamma"}]
    assert await client.count("messages", [seven]) == 3


async def test_upsert_merges_and_ignore_duplicates_keeps(client: InsForgeClient) -> None:
    [first] = await client.upsert(
        "chat_summaries", {"chat_id": 1, "summary": "a", "message_count": 1}, on_conflict="chat_id"
    )
    [merged] = await client.upsert(
        "chat_summaries", {"chat_id": 1, "summary": "b", "message_count": 2}, on_conflict="chat_id"
    )
    assert (merged["summary"], merged["message_count"]) == ("b", 2)
    await client.upsert("user_facts", {"user_id": 1, "fact": "x"}, on_conflict="user_id,fact")
    again = await client.upsert(
        "user_facts",
        [{"user_id": 1, "fact": "x"}, {"user_id": 1, "fact": "y"}],
        on_conflict="user_id,fact",
        ignore_duplicates=True,
    )
    assert [row["fact"] for row in again] == ["y"]
    assert first["chat_id"] == 1


# --- retries and outages ---


async def test_a_503_after_an_insert_ran_is_not_repeated(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    # PostgreSQL lost mid-statement: InsForge answers 503 although the row may be stored.
    fake_insforge.fail_next(503, after_run=True)
    with pytest.raises(StorageUnavailable, match="may or may not have been stored"):
        await client.insert("messages", {"chat_id": 3, "role": "user", "text": "hello"})
    assert sleeps.waits == []
    assert await client.count("messages", {"chat_id": eq(3)}) == 1


async def test_a_503_is_retried_for_idempotent_requests(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    fake_insforge.fail_next(503)
    assert await client.select("messages", {"chat_id": eq(3)}) == []
    fake_insforge.fail_next(503, after_run=True)
    [row] = await client.upsert(
        "chat_summaries", {"chat_id": 3, "summary": "s"}, on_conflict="chat_id"
    )
    assert row["summary"] == "s"
    assert len(sleeps.waits) == 2
    assert len(await client.select("chat_summaries", {"chat_id": eq(3)})) == 1


async def test_408_is_unavailable_and_retried_only_when_idempotent(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    await client.insert("messages", [{"chat_id": 10, "role": "user", "text": "x"}] * 2)
    fake_insforge.fail_next(408)
    assert await client.count("messages", {"chat_id": eq(10)}) == 2
    fake_insforge.fail_next(408, methods=["DELETE"])
    assert len(await client.delete("messages", {"chat_id": eq(10)}, select="id")) == 2
    assert len(sleeps.waits) == 2

    # A plain insert cannot know whether it ran: an error the caller sees, not a rejection.
    fake_insforge.fail_next(408, after_run=True)
    with pytest.raises(StorageUnavailable) as caught:
        await client.insert("messages", {"chat_id": 10, "role": "user", "text": "y"})
    assert not isinstance(caught.value, StorageRejected)
    assert "408" in str(caught.value)
    assert len(sleeps.waits) == 2
    assert await client.count("messages", {"chat_id": eq(10)}) == 1


async def test_429_waits_for_retry_after(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    fake_insforge.fail_next(429, retry_after=2)
    await client.insert("messages", {"chat_id": 4, "role": "user", "text": "hi"})
    assert sleeps.waits == [2.0]
    assert await client.count("messages", {"chat_id": eq(4)}) == 1


async def test_a_retry_after_beyond_the_limit_fails_at_once(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    fake_insforge.fail_next(429, retry_after=3600)
    with pytest.raises(StorageUnavailable, match="retry after 3600"):
        await client.select("messages")
    assert sleeps.waits == []


async def test_down_with_retries_exhausted_is_unavailable(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    fake_insforge.down = True
    with pytest.raises(StorageUnavailable, match="after 3 attempts"):
        await client.upsert("chat_summaries", {"chat_id": 5, "summary": "x"}, on_conflict="chat_id")
    assert len(sleeps.waits) == 2
    fake_insforge.down = False
    assert await client.select("chat_summaries", {"chat_id": eq(5)}) == []


async def test_an_insert_with_an_unknown_outcome_is_not_repeated(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    # The server stored the row, then failed: sending it again would store it twice.
    fake_insforge.fail_next(500, after_run=True)
    with pytest.raises(StorageUnavailable):
        await client.insert("messages", {"chat_id": 6, "role": "user", "text": "x"})
    assert sleeps.waits == []
    assert await client.count("messages", {"chat_id": eq(6)}) == 1


async def test_an_upsert_with_an_unknown_outcome_is_repeated_safely(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    fake_insforge.fail_next(502, after_run=True)
    [row] = await client.upsert(
        "agent_model_config", {"agent_name": "tutor", "model_id": "m/1"}, on_conflict="agent_name"
    )
    assert row["model_id"] == "m/1"
    assert len(sleeps.waits) == 1
    assert len(await client.select("agent_model_config", {"agent_name": eq("tutor")})) == 1


async def test_a_dropped_connection_is_retried_only_when_idempotent(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    # A read whose connection drops is sent again and answers (aiohttp itself resends an
    # idempotent request once when a kept-alive connection drops; our retry covers the rest).
    before = len(fake_insforge.requests)
    fake_insforge.drop_next()
    assert await client.select("messages", {"chat_id": eq(8)}) == []
    assert len(fake_insforge.requests) - before == 2
    # An insert that ran before its connection dropped is not sent again: it would be doubled.
    before = len(fake_insforge.requests)
    fake_insforge.drop_next(after_run=True)
    with pytest.raises(StorageUnavailable, match="may or may not have been stored"):
        await client.insert("messages", {"chat_id": 8, "role": "user", "text": "x"})
    assert len(fake_insforge.requests) - before == 1
    assert sleeps.waits == []
    assert await client.count("messages", {"chat_id": eq(8)}) == 1
    # An upsert is sent again: repeating it cannot double the row.
    fake_insforge.drop_next(after_run=True)
    [row] = await client.upsert(
        "agent_model_config", {"agent_name": "coach", "model_id": "m/2"}, on_conflict="agent_name"
    )
    assert row["model_id"] == "m/2"
    assert len(sleeps.waits) == 1
    assert len(await client.select("agent_model_config", {"agent_name": eq("coach")})) == 1


async def test_a_hang_times_out_then_reads_retry(
    fake_insforge: FakeInsForge, sleeps: Sleeps
) -> None:
    quick = InsForgeClient(
        fake_insforge.url, fake_insforge.api_key, timeout=0.3, max_retries=1, sleep=sleeps
    )
    try:
        fake_insforge.hang_next(5.0)
        assert await quick.select("messages") == []  # second attempt answers
        assert len(sleeps.waits) == 1
        fake_insforge.hang_next(5.0, count=2)
        with pytest.raises(StorageUnavailable, match="in time"):
            await quick.select("messages")
        fake_insforge.hang_next(5.0)
        with pytest.raises(StorageUnavailable, match="may or may not have been stored"):
            await quick.insert("messages", {"chat_id": 9, "role": "user", "text": "x"})
    finally:
        await quick.aclose()


async def test_connection_refused_is_unavailable_naming_the_url(sleeps: Sleeps) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    dead = InsForgeClient(url, "key", max_retries=1, sleep=sleeps)
    try:
        with pytest.raises(StorageUnavailable, match="INSFORGE_URL"):
            await dead.insert("messages", {"chat_id": 1, "role": "user", "text": "x"})
    finally:
        await dead.aclose()
    assert len(sleeps.waits) == 1  # never reached the server: safe to retry even an insert


async def test_missing_key_or_url_is_a_configuration_error() -> None:
    with pytest.raises(StorageConfigError, match="INSFORGE_API_KEY"):
        InsForgeClient("http://127.0.0.1:1", None)
    with pytest.raises(StorageConfigError, match="INSFORGE_URL"):
        InsForgeClient("", "key")


async def test_the_hot_paths_are_one_request_each(fake_insforge: FakeInsForge) -> None:
    from bot.storage.insforge import InsForgeStorage
    from bot.storage.models import StoredMessage

    storage = InsForgeStorage.from_url(fake_insforge.url, fake_insforge.api_key)
    try:
        calls = [
            storage.messages.recent(1, limit=20),
            storage.summaries.get(1),
            storage.facts.list(1),
            storage.model_config.get_all_active(),
            storage.messages.add(StoredMessage(chat_id=1, role="user", text="q")),
            storage.messages.add(StoredMessage(chat_id=1, role="assistant", text="a")),
        ]
        for call in calls:
            before = len(fake_insforge.requests)
            await call
            assert len(fake_insforge.requests) == before + 1
    finally:
        await storage.close()


# --- functions through /api/database/rpc ---


async def _create_functions(fake: FakeInsForge) -> None:
    conn = await asyncpg.connect(fake.dsn)
    try:
        await conn.execute(
            """
            CREATE OR REPLACE FUNCTION rpc_test_roles(p_chat BIGINT, p_limit INT DEFAULT 10)
            RETURNS TABLE (role TEXT, n BIGINT) LANGUAGE sql STABLE AS $$
                SELECT role, count(*) FROM messages WHERE chat_id = p_chat
                GROUP BY role ORDER BY role LIMIT p_limit
            $$;
            CREATE OR REPLACE FUNCTION rpc_test_total(p_chats BIGINT[]) RETURNS BIGINT
            LANGUAGE sql STABLE AS $$ SELECT count(*) FROM messages WHERE chat_id = ANY(p_chats) $$;
            CREATE OR REPLACE FUNCTION rpc_test_echo(p_value JSONB) RETURNS JSONB
            LANGUAGE sql IMMUTABLE AS $$ SELECT p_value $$;
            """
        )
    finally:
        await conn.close()
    await fake.reload_schema()


async def test_rpc_calls_a_function_by_its_named_arguments(
    fake_insforge: FakeInsForge, client: InsForgeClient
) -> None:
    await _create_functions(fake_insforge)
    await client.insert(
        "messages",
        [
            {"chat_id": 5, "role": "user", "text": "a"},
            {"chat_id": 5, "role": "assistant", "text": "b"},
            {"chat_id": 5, "role": "user", "text": "c"},
            {"chat_id": 6, "role": "user", "text": "d"},
        ],
    )
    # A set-returning function: its rows; an argument with a default may be left out.
    assert await client.rpc("rpc_test_roles", {"p_chat": 5}, read_only=True) == [
        {"role": "assistant", "n": 1},
        {"role": "user", "n": 2},
    ]
    assert await client.rpc("rpc_test_roles", {"p_chat": 5, "p_limit": 1}) == [
        {"role": "assistant", "n": 1}
    ]
    # A scalar: its value; arrays go as JSON arrays, JSON as JSON.
    assert await client.rpc("rpc_test_total", {"p_chats": [5, 6, 7]}) == 4
    assert await client.rpc("rpc_test_echo", {"p_value": {"a": [1, "x"]}}) == {"a": [1, "x"]}


async def test_rpc_of_an_unknown_function_or_arguments_says_to_migrate(
    fake_insforge: FakeInsForge, client: InsForgeClient
) -> None:
    await _create_functions(fake_insforge)
    response = await _raw(fake_insforge, "POST", "/api/database/rpc/no_such_fn", json={})
    assert response.status_code == 404
    assert response.json()["code"] == "PGRST202"
    with pytest.raises(StorageNotFound, match="python -m bot migrate"):
        await client.rpc("no_such_fn")
    # Known function, wrong argument names: PostgREST finds no such signature either.
    with pytest.raises(StorageNotFound):
        await client.rpc("rpc_test_roles", {"chat": 5})


async def test_rpc_retries_an_unknown_outcome_only_when_read_only(
    fake_insforge: FakeInsForge, client: InsForgeClient, sleeps: Sleeps
) -> None:
    await _create_functions(fake_insforge)
    fake_insforge.fail_next(503)
    assert await client.rpc("rpc_test_total", {"p_chats": [1]}, read_only=True) == 0
    assert len(sleeps.waits) == 1
    fake_insforge.fail_next(503)
    with pytest.raises(StorageUnavailable, match="may or may not"):
        await client.rpc("rpc_test_total", {"p_chats": [1]})


# --- a busy pool ---


async def test_requests_waiting_for_a_pooled_connection_are_not_unreachable(
    fake_insforge: FakeInsForge, sleeps: Sleeps
) -> None:
    """A burst once queued InsForge requests for a pooled connection for longer than the
    timeout; aiohttp counted the wait as connecting, and InsForge was reported as "cannot be
    reached" (and the request retried) while it answered every request in time. Waiting for
    our own pool is not InsForge failing: only the connect itself and each read are bounded."""
    client = InsForgeClient(
        fake_insforge.url,
        fake_insforge.api_key,
        timeout=0.5,
        max_retries=0,
        max_connections=1,
        sleep=sleeps,
    )
    try:
        await client.select("users", limit=1)  # the one connection is open and pooled
        fake_insforge.hang_next(0.35, count=3)
        # One connection for three requests that take 0.35 s each: the last waits 0.7 s.
        results = await asyncio.gather(*(client.select("users", limit=1) for _ in range(3)))
    finally:
        await client.aclose()
    assert results == [[], [], []]
    assert sleeps.waits == []  # nothing was retried
