"""Configuration: one `Settings` object, read from the environment and `.env`.

Every variable is listed, grouped and commented in `.env.example`. A wrong value stops the bot at
start-up with a `ConfigError` that names the variable and says what it wants; nothing is guessed.
Secrets are `SecretStr` so that printing or logging the settings never shows them.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.llm.specs import PROVIDERS, ModelSpec, ModelSpecError, parse_spec

AGENT_NAMES: tuple[str, ...] = (
    "extraction",
    "strategist",
    "coach",
    "tutor",
    "trainer",
    "summarizer",
)
PIPELINE_NAMES: tuple[str, ...] = ("support", "learn", "train")


class ConfigError(Exception):
    """The configuration cannot work; the message names the variable(s) to fix."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _split_pairs(value: Any) -> Any:
    """`a=x,b=y` -> {"a": "x", "b": "y"}; values may contain `:` and `/` (model specs)."""
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            key, sep, val = part.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise ValueError(
                    f"expected name=provider:model pairs separated by commas, got {part!r}"
                )
            pairs[key.strip().lower()] = val.strip()
        return pairs
    return value


# Telegram's rule for setWebhook's secret_token; anything else makes setWebhook fail at start.
WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Plain http is only for a webhook that never leaves the machine (tests, a local Bot API server).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

CsvList = Annotated[list[str], NoDecode]
CsvInts = Annotated[list[int], NoDecode]
Pairs = Annotated[dict[str, str], NoDecode]


# Whose key picks DEFAULT_MODEL when it is not set (the first one present wins).
STARTER_ORDER = ("openrouter", "openai", "anthropic", "groq", "xai")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        protected_namespaces=(),
        hide_input_in_errors=True,
    )

    # --- Telegram ---
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str | None = None
    admin_ids: CsvInts = Field(default_factory=list)
    # Live drafts/edits per second for the whole bot; final replies are never held back.
    live_updates_per_second: float = Field(default=25.0, gt=0)

    # --- Models ---
    # Empty: a small model of the first provider whose key is set (see STARTER_ORDER).
    default_model: str = ""
    fallback_models: CsvList = Field(default_factory=list)
    agent_models: Pairs = Field(default_factory=dict)
    pipeline_models: Pairs = Field(default_factory=dict)
    # Models offered to users by `/model` (specs). Empty: DEFAULT_MODEL and FALLBACK_MODELS.
    user_models: CsvList = Field(default_factory=list)
    llm_timeout: float = Field(default=60.0, gt=0)
    # The SDKs' own retries on the same model; our fallback chain handles the rest.
    llm_max_retries: int = Field(default=1, ge=0, le=5)
    step_timeout: float = Field(default=120.0, gt=0)
    # How many messages a chat grows by before its rolling summary is rewritten (a model call).
    # At most the history window the agents see (20 messages), so nothing falls out of both.
    summary_every: int = Field(default=6, ge=1, le=20)
    # Tokens the history and the notes (summary, facts) may take in one prompt; older messages
    # are left to the summary, a long one is cut (bot/agents/budget.py).
    prompt_budget_tokens: int = Field(default=3000, ge=200, le=200_000)

    # --- Providers ---
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = PROVIDERS["openrouter"].default_base_url or ""
    openrouter_app_url: str = "https://github.com/coach-bot/coach-bot"
    openrouter_app_title: str = "Coach Bot"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = PROVIDERS["openai"].default_base_url or ""
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = PROVIDERS["anthropic"].default_base_url or ""
    groq_api_key: SecretStr | None = None
    groq_base_url: str = PROVIDERS["groq"].default_base_url or ""
    xai_api_key: SecretStr | None = None
    xai_base_url: str = PROVIDERS["xai"].default_base_url or ""
    vllm_api_key: SecretStr | None = None
    vllm_base_url: str = PROVIDERS["vllm"].default_base_url or ""
    mlx_model_path: str | None = None
    # The local model (`mlx:...`, `vllm:...`, or a catalog alias of one) that serves users who
    # chose `/prefer local` wherever the levels name a cloud model. Empty: the first local
    # model of the catalog, if any.
    local_model: str = ""

    # --- Storage ---
    database_url: str = "sqlite:///data/bot.db"
    insforge_url: str | None = None
    insforge_api_key: SecretStr | None = None
    insforge_timeout: float = Field(default=10.0, gt=0)
    model_config_ttl: float = Field(default=60.0, gt=0)
    bot_secret_key: SecretStr | None = None

    # --- Access (who may use the bot) ---
    # open: anyone; allowlist: ALLOWED_USER_IDS / ALLOWED_CHAT_IDS (and /users allow);
    # approval: a stranger's first message asks the admins (Approve / Deny buttons).
    access_mode: Literal["open", "allowlist", "approval"] = "open"
    allowed_user_ids: CsvInts = Field(default_factory=list)
    # Group chats (negative ids) whose members may use the bot there.
    allowed_chat_ids: CsvInts = Field(default_factory=list)
    # Messages one user may send per minute (sliding window) before a notice; 0: no limit.
    # Admins are exempt. Shared by replicas through REDIS_URL.
    user_messages_per_minute: int = Field(default=20, ge=0, le=10_000)

    # --- Budgets (USD, from the call ledger's costs; /budget changes them at runtime) ---
    # Empty: no limit. The whole bot per day; every user per day and per month.
    budget_daily_usd: float | None = Field(default=None, ge=0)
    budget_user_daily_usd: float | None = Field(default=None, ge=0)
    budget_user_monthly_usd: float | None = Field(default=None, ge=0)
    # Per agent per day: `strategist=1,coach=5`.
    budget_agent_daily_usd: Pairs = Field(default_factory=dict)
    # What an agent does once a budget is spent: `agent=downgrade:<model>|skip|refuse,...`.
    # Default: skip for the optional helpers, refuse for the agent that writes the reply.
    budget_policy: Pairs = Field(default_factory=dict)
    # Days and months start at midnight here (an IANA zone, e.g. Europe/Berlin).
    budget_timezone: str = "UTC"
    # Whether admins' own turns are held to the budgets too (they always count in the spend).
    budget_admins: bool = False

    # --- Archives (users' own documents, searched for the tutor and coach) ---
    archive_max_files: int = Field(default=20, ge=1, le=1000)
    # Megabytes (10^6 bytes) of uploaded files one user may keep, all archives together.
    archive_max_mb: float = Field(default=50.0, gt=0, le=10_000)

    # --- The call ledger (bot/observatory): /stats, /usage, change reports ---
    # Off: no rows are captured or written (the benchmark's A/B switch; /stats says it is off).
    ledger_enabled: bool = True
    ledger_retention_days: int = Field(default=90, ge=1, le=3650)
    change_report_after_calls: int = Field(default=100, ge=1)
    change_report_after_hours: float = Field(default=24.0, gt=0)
    # `/trial`: candidate calls before the guardrails may stop a trial (its `min=` default).
    trial_min_calls: int = Field(default=100, ge=1)
    # Seconds between the guardrails' checks of the running trials (one count query per trial;
    # a look's reads only every `min` candidate calls).
    trial_check_seconds: float = Field(default=30.0, gt=0, le=3600)
    # `/replay`: each agent's last REPLAY_KEEP inputs (the messages it sent its model, the
    # options, the output) are kept in the database to be run again on a candidate model.
    replay_keep: int = Field(default=50, ge=1, le=1000)
    # Off: no prompt is kept for replay at all (nothing of a user's text beyond the chat's own
    # history is stored); `/replay` then has nothing to run.
    store_prompts: bool = True

    # --- Observability ---
    langfuse_public_key: str | None = None
    langfuse_secret_key: SecretStr | None = None
    langfuse_base_url: str = "https://cloud.langfuse.com"
    # Keep prompts and replies out of traces entirely (models, tokens, costs, timings stay).
    langfuse_redact_content: bool = False
    # How the export process makes spans: `direct` writes the SDK's spans straight to OTLP
    # (decision 0026, a fifth of the CPU); `sdk` hands every record to the Langfuse SDK.
    langfuse_export: Literal["direct", "sdk"] = "direct"
    log_level: str = "INFO"

    # --- Deployment ---
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    redis_url: str | None = None
    shutdown_timeout: float = Field(default=20.0, gt=0)
    # An update stored but not answered for this long (the bot was down) gets an apology instead.
    stale_update_seconds: float = Field(default=600.0, gt=0)
    # How long a final reply is retried through Telegram's 5xx and network errors.
    delivery_retry_seconds: float = Field(default=120.0, ge=0)
    # The intake's SQLite file (updates stored until answered); default beside the database.
    intake_path: str | None = None

    _split_lists = field_validator(
        "admin_ids",
        "allowed_user_ids",
        "allowed_chat_ids",
        "fallback_models",
        "user_models",
        mode="before",
    )(_split_csv)
    _split_maps = field_validator(
        "agent_models", "pipeline_models", "budget_agent_daily_usd", "budget_policy", mode="before"
    )(_split_pairs)

    @field_validator(
        "budget_daily_usd", "budget_user_daily_usd", "budget_user_monthly_usd", mode="before"
    )
    @classmethod
    def _empty_is_no_limit(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("budget_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. UTC, Europe/Berlin)"
            ) from None
        return value

    @field_validator("budget_agent_daily_usd")
    @classmethod
    def _agent_budgets(cls, value: dict[str, str]) -> dict[str, str]:
        for agent, usd in value.items():
            if agent not in AGENT_NAMES:
                raise ValueError(f"unknown agent {agent!r} (agents: {', '.join(AGENT_NAMES)})")
            try:
                if float(usd) < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{agent}={usd!r}: expected an amount in USD, e.g. {agent}=1.5"
                ) from None
        return value

    @field_validator("budget_policy")
    @classmethod
    def _budget_policies(cls, value: dict[str, str]) -> dict[str, str]:
        for agent, policy in value.items():
            if agent not in AGENT_NAMES:
                raise ValueError(f"unknown agent {agent!r} (agents: {', '.join(AGENT_NAMES)})")
            kind, _, model = policy.partition(":")
            if kind not in ("downgrade", "skip", "refuse") or (kind == "downgrade") != bool(model):
                raise ValueError(f"{agent}={policy!r}: expected downgrade:<model>, skip or refuse")
        return value

    @field_validator(
        "telegram_api_base",
        "insforge_url",
        "webhook_url",
        "redis_url",
        "intake_path",
        "mlx_model_path",
        "langfuse_public_key",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "telegram_bot_token",
        "openrouter_api_key",
        "openai_api_key",
        "anthropic_api_key",
        "groq_api_key",
        "xai_api_key",
        "vllm_api_key",
        "insforge_api_key",
        "bot_secret_key",
        "langfuse_secret_key",
        "webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "openrouter_base_url",
        "openai_base_url",
        "anthropic_base_url",
        "groq_base_url",
        "xai_base_url",
        "vllm_base_url",
        "langfuse_base_url",
        "database_url",
        mode="before",
    )
    @classmethod
    def _empty_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip() and info.field_name:
            return cls.model_fields[info.field_name].default
        return value.strip().rstrip("/") if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "sqlite+aiosqlite:///")):
            raise ValueError(
                "only sqlite:///path/to/file.db is supported here; "
                "for PostgreSQL set INSFORGE_URL and INSFORGE_API_KEY"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https_webhook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme == "https" and parts.hostname:
            return value.strip()
        if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            return value.strip()
        raise ValueError(
            "must be the public https:// address Telegram posts updates to, e.g. "
            "https://bot.example.com/webhook (plain http only for localhost/127.0.0.1)"
        )

    @field_validator("webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not WEBHOOK_SECRET_PATTERN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and - "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Settings:
        if self.webhook_url and self.webhook_secret is None:
            # Without it the webhook would take any POST from anyone as an update from Telegram.
            raise ValueError(
                "WEBHOOK_SECRET is required when WEBHOOK_URL is set: Telegram sends it with every "
                "update and the bot refuses requests without it (1-256 characters of A-Z, a-z, "
                "0-9, _ and -, e.g. the output of `openssl rand -hex 32`)"
            )
        return self

    @model_validator(mode="after")
    def _approval_needs_admins(self) -> Settings:
        if self.access_mode == "approval" and not self.admin_ids:
            raise ValueError(
                "ACCESS_MODE=approval needs ADMIN_IDS: strangers wait for an admin's Approve, "
                "and without admins nobody could give it"
            )
        return self

    @model_validator(mode="after")
    def _default_model_follows_the_key(self) -> Settings:
        # A bot token and one model key are enough to start: without DEFAULT_MODEL, the default is
        # a small model of the first provider (in STARTER_ORDER) whose key is set.
        self.default_model = self.default_model.strip()
        if self.default_model:
            return self
        with_key = [p for p in STARTER_ORDER if self.api_key_for(p) is not None]
        # No key at all: OpenRouter's, so that the start-up error names OPENROUTER_API_KEY.
        provider = with_key[0] if with_key else STARTER_ORDER[0]
        self.default_model = f"{provider}:{PROVIDERS[provider].starter_model}"
        return self

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        problems: list[str] = []

        def check(raw: str, variable: str) -> None:
            try:
                parse_spec(raw, variable=variable)
            except ModelSpecError as exc:
                problems.append(str(exc))

        check(self.default_model, "DEFAULT_MODEL")
        local = self.local_model = self.local_model.strip()
        if ":" in local:
            check(local, "LOCAL_MODEL")
            if not problems and not parse_spec(local).is_local:
                problems.append(
                    f"LOCAL_MODEL: {local} is not a local model; name an mlx: or vllm: model "
                    "(or a catalog alias of one)"
                )
        for raw in self.fallback_models:
            check(raw, "FALLBACK_MODELS")
        for raw in self.user_models:
            check(raw, "USER_MODELS")
        for agent, raw in self.agent_models.items():
            if agent not in AGENT_NAMES:
                problems.append(
                    f"AGENT_MODELS: unknown agent {agent!r} (agents: {', '.join(AGENT_NAMES)})"
                )
            check(raw, "AGENT_MODELS")
        for pipeline, raw in self.pipeline_models.items():
            if pipeline not in PIPELINE_NAMES:
                problems.append(
                    f"PIPELINE_MODELS: unknown pipeline {pipeline!r} "
                    f"(pipelines: {', '.join(PIPELINE_NAMES)})"
                )
            check(raw, "PIPELINE_MODELS")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived values ---

    @cached_property
    def default_spec(self) -> ModelSpec:
        return parse_spec(self.default_model)

    @cached_property
    def fallback_specs(self) -> tuple[ModelSpec, ...]:
        return tuple(parse_spec(raw) for raw in self.fallback_models)

    @property
    def uses_insforge(self) -> bool:
        return bool(self.insforge_url)

    @property
    def sqlite_path(self) -> str:
        return self.database_url.split(":///", 1)[1]

    @property
    def tracing_enabled(self) -> bool:
        return bool(self.langfuse_public_key and self.langfuse_secret_key)

    def api_key_for(self, provider: str) -> SecretStr | None:
        value = getattr(self, f"{provider}_api_key", None)
        return value if isinstance(value, SecretStr) else None

    def base_url_for(self, provider: str) -> str | None:
        value = getattr(self, f"{provider}_base_url", None)
        return value if isinstance(value, str) and value else None

    def secrets(self) -> list[str]:
        """Every configured secret value, for redaction checks and log scrubbing."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
        return level

    def _configured(self) -> list[tuple[str, str]]:
        specs: list[tuple[str, str]] = [("DEFAULT_MODEL", self.default_model)]
        specs += [("FALLBACK_MODELS", raw) for raw in self.fallback_models]
        specs += [("AGENT_MODELS", raw) for raw in self.agent_models.values()]
        specs += [("PIPELINE_MODELS", raw) for raw in self.pipeline_models.values()]
        if ":" in self.local_model:
            specs.append(("LOCAL_MODEL", self.local_model))
        return specs

    def configured_specs(self) -> list[ModelSpec]:
        """Every model the configuration names (default, fallbacks, per agent and pipeline)."""
        return [parse_spec(raw) for _, raw in self._configured()]

    def missing_key_problems(self) -> list[str]:
        """Specs configured for providers whose key is not set, as messages naming the variable."""
        problems: list[str] = []
        for variable, raw in self._configured():
            spec = parse_spec(raw)
            info = spec.info
            if info.needs_key and info.key_var and self.api_key_for(spec.provider) is None:
                problems.append(f"{variable} uses {spec} but {info.key_var} is not set")
            if (
                spec.provider == "mlx"
                and not self.mlx_model_path
                and not spec.model.startswith("/")
            ):
                problems.append(f"{variable} uses {spec}; set MLX_MODEL_PATH to the model folder")
        return problems


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _describe(error: ValidationError) -> str:
    lines: list[str] = []
    for item in error.errors():
        loc = item.get("loc") or ()
        variable = str(loc[0]).upper() if loc else "configuration"
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{variable}: {message}" if loc else message)
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a bad value raises `ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            "The configuration is not valid:\n" + _describe(exc) + "\nSee .env.example."
        ) from None
