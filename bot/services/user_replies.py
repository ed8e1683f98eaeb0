"""What the bot says about a user's own settings and memory, in Telegram and in the console.

    key_reply(outcome, users)        # after /setkey: saved (and what it pays for), refused, ...
    forgotten_text(forgotten)        # after /forget: what went
    setkey_words(["sk-...", "openai"]) -> ("openai", "sk-...")

No reply ever carries a key: an unknown provider is named back only when it is a short word of
letters (a key typed in its place never is).
"""

from __future__ import annotations

import difflib
import re

from bot.services.user_settings import Forgotten, KeyOutcome, UserSettingsService, key_providers

__all__ = [
    "SETKEY_USAGE",
    "count",
    "forgotten_text",
    "key_reply",
    "setkey_words",
    "unknown_provider_text",
]

SETKEY_USAGE = (
    "Usage: /setkey <provider> <key>  (providers: "
    + ", ".join(key_providers())
    + ")\n/setkey off removes your key. Send it in a private chat with me."
)


# What an unknown provider may look like to be named back: a short word of letters. Anything else
# (`sk-proj-...`, a long token) may be a key typed in the wrong place and is never repeated.
_PROVIDER_LIKE = re.compile(r"^[a-z]{1,16}$")


def unknown_provider_text(provider: str) -> str:
    """What to say about a provider the bot doesn't know, without ever repeating a key."""
    if not _PROVIDER_LIKE.match(provider):
        return "The first word after /setkey must be the provider."
    close = difflib.get_close_matches(provider, key_providers(), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"I don't know the provider {provider!r}.{hint}"


def setkey_words(args: list[str]) -> tuple[str, str]:
    """(provider, key) from the two words of `/setkey`, in either order: a user who typed the
    key first (`/setkey sk-... openai`) means the same thing."""
    first, second = args
    providers = key_providers()
    if first.lower() not in providers and second.lower() in providers:
        return second, first
    return first, second


def key_reply(outcome: KeyOutcome, users: UserSettingsService) -> str:
    provider = outcome.provider
    if outcome.status == "bad_provider":
        return f"{unknown_provider_text(provider)}\n{SETKEY_USAGE}"
    if outcome.status == "disabled":
        return (
            "This bot is not set up to store users' keys (the operator has to set BOT_SECRET_KEY)."
        )
    if outcome.status == "refused":
        return f"{provider} refused that key, so I did not save it. Check it and try again."
    if outcome.status == "untested":
        return (
            f"I couldn't confirm that the {provider} key works (the test call on "
            f"{outcome.tested_model} failed), so I did not save it. Please try again later."
        )
    saved = f"Your {provider} key works and is saved, encrypted."
    if outcome.agents:
        return (
            f"{saved} It pays for: {', '.join(outcome.agents)} (on your model "
            f"{outcome.user_model}). Other agents run on models the admins chose, "
            "at the bot's cost."
        )
    offered = [m for m in users.allowed_models() if m.startswith(f"{provider}:")]
    if offered:
        return f"{saved} Nothing uses it yet: choose a {provider} model with /model."
    return (
        f"{saved} None of the models offered by /model runs on {provider}, "
        "so it is not used for now."
    )


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def forgotten_text(forgotten: Forgotten) -> str:
    messages = count(forgotten.messages, "message")
    if not forgotten.private:
        return (
            f"Done: I've forgotten this group's {messages} and its summary. What you told me "
            "in private stays there; send /forget to me in a private chat to clear that too."
        )
    if forgotten.facts:
        return (
            f"Done: I've forgotten this chat's {messages}, its summary and the "
            f"{count(forgotten.facts, 'fact')} I had noted about you."
        )
    return f"Done: I've forgotten this chat's {messages} and its summary (I had noted no facts)."
