"""`python -m bot check`: validate the configuration and reach every configured service.

One line per service, `ok` or `FAIL` with the reason and the variable to look at. Nothing here
spends money: providers are reached through their model-listing endpoints, not a completion.
The exit code is 0 only when every configured service answered; 2 when the configuration itself
is incomplete (a configured model's key, the bot token, an mlx model's extra), 1 when a service
did not answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bot.config import Settings
from bot.llm.local_runners.base import LOCAL_EXTRA_INSTALL
from bot.llm.specs import PROVIDERS
from bot.services.access import open_access_warning

CHECK_TIMEOUT = 10.0


@dataclass(slots=True)
class CheckResult:
    service: str
    ok: bool
    detail: str
    elapsed_ms: float = 0.0

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        return f"{status} {self.service:<22} {self.detail} ({self.elapsed_ms:.0f} ms)"


def _scrub(text: str, settings: Settings) -> str:
    for secret in settings.secrets():
        text = text.replace(secret, "***")
    return text


async def _timed(
    service: str, settings: Settings, probe: Callable[[], Awaitable[str]]
) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), CHECK_TIMEOUT)
        ok = True
    except TimeoutError:
        detail, ok = f"no answer within {CHECK_TIMEOUT:.0f} s", False
    except Exception as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    elapsed = (time.perf_counter() - started) * 1000
    return CheckResult(service, ok, _scrub(detail, settings), elapsed)


async def _check_database(settings: Settings) -> str:
    from bot.storage.factory import create_storage

    storage = create_storage(settings)
    try:
        await storage.connect()
        await storage.ping()
        overrides = await storage.model_config.get_all_active()
    finally:
        await storage.close()
    where = settings.insforge_url if settings.uses_insforge else settings.sqlite_path
    return f"{storage.backend} at {where}, {len(overrides)} active override(s)"


async def _check_redis(settings: Settings) -> str:
    import redis.asyncio as redis

    assert settings.redis_url is not None
    client = redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "PING answered"


async def _check_telegram(settings: Settings) -> str:
    assert settings.telegram_bot_token is not None
    base = (settings.telegram_api_base or "https://api.telegram.org").rstrip("/")
    token = settings.telegram_bot_token.get_secret_value()
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
        response = await client.get(f"{base}/bot{token}/getMe")
    if response.status_code == 401:
        raise RuntimeError("TELEGRAM_BOT_TOKEN was rejected (401)")
    response.raise_for_status()
    me = response.json().get("result", {})
    return f"@{me.get('username', '?')} via {base}"


async def _check_langfuse(settings: Settings) -> str:
    if settings.langfuse_public_key is None or settings.langfuse_secret_key is None:
        raise RuntimeError("LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are both needed")
    auth = (settings.langfuse_public_key, settings.langfuse_secret_key.get_secret_value())
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT, auth=auth) as client:
        response = await client.get(f"{settings.langfuse_base_url}/api/public/projects")
    if response.status_code in (401, 403):
        raise RuntimeError("LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY were rejected")
    response.raise_for_status()
    return f"reached {settings.langfuse_base_url}"


def _provider_probe(settings: Settings, provider: str) -> Callable[[], Awaitable[str]]:
    async def probe() -> str:
        info = PROVIDERS[provider]
        key = settings.api_key_for(provider)
        base = settings.base_url_for(provider) or info.default_base_url or ""
        headers: dict[str, str] = {}
        if info.wire == "anthropic":
            url = f"{base}/v1/models"
            if key:
                headers = {"x-api-key": key.get_secret_value(), "anthropic-version": "2023-06-01"}
        else:
            url = f"{base}/models"
            if key:
                headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
            response = await client.get(url, headers=headers)
        if response.status_code in (401, 403):
            raise RuntimeError(f"{info.key_var} was rejected ({response.status_code})")
        response.raise_for_status()
        models = response.json().get("data", [])
        return f"{len(models)} model(s) listed at {base}"

    return probe


async def _check_local(settings: Settings) -> str:
    from pathlib import Path

    assert settings.mlx_model_path is not None
    path = Path(settings.mlx_model_path)
    if not (path / "config.json").is_file():
        raise RuntimeError(f"MLX_MODEL_PATH={path} has no config.json")
    return f"model folder {path}"


async def collect_checks(settings: Settings) -> list[CheckResult]:
    probes: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("database", lambda: _check_database(settings)),
    ]
    if settings.telegram_bot_token is not None:
        probes.append(("telegram", lambda: _check_telegram(settings)))
    if settings.redis_url:
        probes.append(("redis", lambda: _check_redis(settings)))
    if settings.tracing_enabled:
        probes.append(("langfuse", lambda: _check_langfuse(settings)))
    for name, info in PROVIDERS.items():
        if info.wire == "local":
            continue
        if settings.api_key_for(name) is not None:
            probes.append((f"provider {name}", _provider_probe(settings, name)))
    if settings.mlx_model_path:
        probes.append(("provider mlx", lambda: _check_local(settings)))
    return list(await asyncio.gather(*(_timed(name, settings, p) for name, p in probes)))


def _webhook_line(settings: Settings) -> str:
    """How Telegram reaches the bot. A webhook without a valid WEBHOOK_SECRET, or on plain http
    off loopback, never gets here: loading the settings refuses it, naming the variable."""
    if not settings.webhook_url:
        return f"ok   {'webhook':<22} off: long polling (WEBHOOK_URL not set)"
    return (
        f"ok   {'webhook':<22} {settings.webhook_url}, secret set; "
        f"listening on {settings.webhook_host}:{settings.webhook_port}"
    )


def _access_line(settings: Settings) -> str:
    warning = open_access_warning(settings)
    if warning is not None:
        return f"WARN {'access':<22} {warning}"
    if settings.access_mode == "allowlist":
        detail = (
            f"allowlist: {len(settings.allowed_user_ids)} user(s), "
            f"{len(settings.allowed_chat_ids)} group(s) in the environment, plus /users allow"
        )
    elif settings.access_mode == "approval":
        detail = f"approval: strangers wait for one of {len(settings.admin_ids)} admin(s)"
    else:
        detail = "open (no shared key configured)"
    return f"ok   {'access':<22} {detail}"


def configuration_problems(settings: Settings) -> list[str]:
    """What keeps the bot from starting as configured, each naming what to set or install."""
    problems = settings.missing_key_problems()
    if settings.telegram_bot_token is None:
        problems.append("TELEGRAM_BOT_TOKEN is not set (get a token from @BotFather)")
    if any(spec.provider == "mlx" for spec in settings.configured_specs()):
        from bot.services.model_checks import local_extra_installed

        if not local_extra_installed():
            problems.append(
                f"an mlx: model is configured but the local-model extra is not installed: "
                f"{LOCAL_EXTRA_INSTALL} in the clone"
            )
    return problems


async def run_check(settings: Settings) -> int:
    problems = configuration_problems(settings)
    print(f"{'ok  ' if not problems else 'FAIL'} {'configuration':<22} ", end="")
    print("valid" if not problems else "; ".join(problems))
    print(_scrub(_webhook_line(settings), settings))
    print(_access_line(settings))
    results = await collect_checks(settings)
    for result in results:
        print(result.line())
    if problems:
        return 2  # the configuration itself: fix it before anything can run
    return 0 if all(r.ok for r in results) else 1
