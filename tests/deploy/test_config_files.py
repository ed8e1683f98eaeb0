"""What an operator copies: `.env.example`, the Dockerfile and the compose example agree with the
code, so following them gives a bot that starts, keeps its data, and can be reached.

These read the files as Docker and Compose would; the image itself is built and run by
`test_replicas.py::test_the_image_builds_and_keeps_its_database_on_the_volume` where a Docker
daemon is available.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from bot.config import Settings
from tests.fakes.bot_process import REPO

ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.example.yml"

_VARIABLE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> list[tuple[str, str]]:
    """The (NAME, value) lines of `.env.example`, in order (comments and blanks skipped)."""
    pairs: list[tuple[str, str]] = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _VARIABLE.match(line.strip())
        if match:
            pairs.append((match.group(1), match.group(2)))
    return pairs


def test_env_example_lists_every_setting_exactly_once() -> None:
    names = [name for name, _ in env_example()]
    fields = {name.upper() for name in Settings.model_fields}
    assert sorted(set(names)) == sorted(names), "a variable is listed twice"
    assert sorted(fields - set(names)) == [], "settings missing from .env.example"
    assert sorted(set(names) - fields) == [], ".env.example lists variables the bot never reads"


def test_every_variable_in_env_example_is_explained_by_a_comment() -> None:
    """Each block of variables starts under a comment (a pair like KEY/BASE_URL may share one)."""
    unexplained: list[str] = []
    previous = ""
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        match = _VARIABLE.match(line)
        if match and not (previous.startswith("#") or _VARIABLE.match(previous)):
            unexplained.append(match.group(1))
        previous = line
    assert unexplained == []


def test_env_example_as_copied_means_the_defaults() -> None:
    """`cp .env.example .env` changes nothing by itself: every value is empty or the default."""
    copied = Settings(_env_file=str(ENV_EXAMPLE))  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert copied.model_dump() == defaults.model_dump()


# --- Dockerfile -------------------------------------------------------------------------------


def final_stage(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The final stage's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    assert stages, "no FROM in the Dockerfile"
    return stages[-1]


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction == "ENV":
            for token in shlex.split(args):
                name, sep, value = token.partition("=")
                if sep:
                    env[name] = value
    return env


def last(stage: list[tuple[str, str]], instruction: str) -> str:
    values = [args for name, args in stage if name == instruction]
    assert values, f"no {instruction} in the final stage"
    return values[-1]


def volume_dirs(stage: list[tuple[str, str]]) -> list[str]:
    raw = last(stage, "VOLUME")
    return [str(v) for v in (json.loads(raw) if raw.startswith("[") else raw.split())]


def database_path_in_container(stage: list[tuple[str, str]], env_file: dict[str, str]) -> str:
    """Where SQLite writes under `docker run --env-file <env_file>`: --env-file beats ENV, and
    an empty value means the Settings default (as the bot reads it)."""
    url = env_file.get("DATABASE_URL", image_env(stage).get("DATABASE_URL", ""))
    if not url.strip():
        url = str(Settings.model_fields["database_url"].default)
    path = url.split(":///", 1)[1]
    workdir = PurePosixPath(last(stage, "WORKDIR"))
    return str(PurePosixPath(path) if path.startswith("/") else workdir / path)


def test_with_the_example_env_the_database_lands_on_the_volume() -> None:
    stage = final_stage()
    database = PurePosixPath(database_path_in_container(stage, dict(env_example())))
    volumes = volume_dirs(stage)
    assert any(database.parent == PurePosixPath(v) for v in volumes), (database, volumes)


def test_without_an_env_file_the_database_lands_on_the_volume_too() -> None:
    stage = final_stage()
    database = PurePosixPath(database_path_in_container(stage, {}))
    assert any(database.parent == PurePosixPath(v) for v in volume_dirs(stage))


def test_the_volume_directory_belongs_to_the_user_the_bot_runs_as() -> None:
    stage = final_stage()
    user = last(stage, "USER")
    assert user not in {"root", "0"}
    runs = " && ".join(args for name, args in stage if name == "RUN")
    for volume in volume_dirs(stage):
        # A named volume starts as a copy of the image's directory, owner included.
        assert re.search(rf"mkdir (-p )?{re.escape(volume)}\b", runs), runs
        assert re.search(rf"chown (-R )?{re.escape(user)}(:\S+)? {re.escape(volume)}\b", runs), runs


def test_the_documented_docker_run_mounts_the_volume_and_outlasts_the_shutdown() -> None:
    """The Dockerfile's own usage line: the volume where the data goes, and a stop timeout
    longer than SHUTDOWN_TIMEOUT (Docker's default 10 s would kill the bot mid-shutdown)."""
    stage = final_stage()
    usage = [
        line.lstrip("# ").strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.lstrip("# ").startswith("docker run ")
    ]
    assert usage, "the Dockerfile shows no `docker run` line"
    args = shlex.split(usage[0])
    assert "--env-file" in args
    mount = args[args.index("-v") + 1]
    assert mount.split(":", 1)[1] in volume_dirs(stage)
    stop_timeout = int(args[args.index("--stop-timeout") + 1])
    assert stop_timeout > float(Settings.model_fields["shutdown_timeout"].default)


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file")
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert match, value
    assert any(match.groups()), value
    minutes, seconds = (int(g or 0) for g in match.groups())
    return minutes * 60 + seconds


def test_compose_bot_replicas_publish_no_port_and_a_proxy_takes_https() -> None:
    services = compose()["services"]
    assert "ports" not in services["bot"], "a published port cannot be scaled to two replicas"
    proxies = [
        name
        for name, service in services.items()
        if any(str(port).startswith("443:") for port in service.get("ports", []))
    ]
    assert proxies, "nothing publishes port 443 for Telegram's webhook"


def test_compose_proxy_balances_over_every_bot_replica() -> None:
    data = compose()
    proxy_configs = " ".join(
        str(config.get("content", "")) for config in data.get("configs", {}).values()
    )
    # Caddy's `dynamic a` re-resolves the service name, so every scaled replica gets traffic.
    assert re.search(r"dynamic a \{[^}]*name bot\b[^}]*port 8080", proxy_configs), proxy_configs
    assert "WEBHOOK_PORT" in str(data["services"]["bot"].get("environment", {}))
    assert str(data["services"]["bot"]["environment"]["WEBHOOK_PORT"]) == "8080"


def test_compose_gives_the_bot_longer_than_its_shutdown_timeout() -> None:
    """Past `stop_grace_period` Compose kills the bot; the shutdown deadline must come first,
    with time left to flush traces and close the database."""
    bot = compose()["services"]["bot"]
    default = Settings.model_fields["shutdown_timeout"].default
    shutdown = float(bot.get("environment", {}).get("SHUTDOWN_TIMEOUT", default))
    assert _seconds(bot["stop_grace_period"]) >= shutdown + 5
