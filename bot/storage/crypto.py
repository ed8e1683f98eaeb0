"""Users' own API keys, encrypted at rest with `BOT_SECRET_KEY`.

A user's provider key is stored as `v1:<Fernet token>` in `user_settings.api_key_encrypted`; the
plain key never reaches a row, a log line or an exception message. The Fernet key is derived from
`BOT_SECRET_KEY` with HKDF-SHA256 (the secret is expected to be a long random string, so a slow
password hash would add nothing), which lets operators use any string as the secret.

    cipher = KeyCipher.from_settings(settings)
    row.api_key_encrypted = cipher.encrypt("sk-...")
    plain = cipher.decrypt(row.api_key_encrypted)   # KeyDecryptionError if the secret changed

Fernet authenticates what it decrypts: a value encrypted under another secret (or damaged) is
refused with `KeyDecryptionError`, never turned into garbage that would be sent to a provider.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from bot.config import Settings
from bot.storage.repositories import StorageConfigError

_PREFIX = "v1:"
# Fixed, public parameters: they separate this use of the secret from any other use of it.
_SALT = b"coach-bot/user-api-keys"
_INFO = b"fernet-key-v1"


class KeyDecryptionError(StorageConfigError):
    """A stored key cannot be decrypted with the current BOT_SECRET_KEY."""


def _derive_fernet_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


class KeyCipher:
    """Encrypts and decrypts users' API keys with a key derived from `BOT_SECRET_KEY`."""

    __slots__ = ("_fernet",)

    def __init__(self, secret: SecretStr | str) -> None:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not raw or not raw.strip():
            raise StorageConfigError(
                "BOT_SECRET_KEY is empty: set it to a long random string to store users' API keys"
            )
        self._fernet = Fernet(_derive_fernet_key(raw))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyCipher:
        if settings.bot_secret_key is None:
            raise StorageConfigError(
                "BOT_SECRET_KEY is not set: users' own API keys cannot be stored without it "
                "(set it to a long random string, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        return cls(settings.bot_secret_key)

    def __repr__(self) -> str:
        return "KeyCipher(<secret>)"

    def encrypt(self, plain: str) -> str:
        """The value to store for `plain`; different on every call (random IV)."""
        if not plain:
            raise ValueError("refusing to encrypt an empty API key")
        return _PREFIX + self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plain key; `KeyDecryptionError` when it was stored under another secret."""
        if not stored.startswith(_PREFIX):
            raise KeyDecryptionError(
                "the stored API key is not in a format this bot wrote (expected 'v1:...'); "
                "ask the user to set their key again"
            )
        try:
            return self._fernet.decrypt(stored[len(_PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise KeyDecryptionError(
                "cannot decrypt the stored API key: BOT_SECRET_KEY changed since it was saved "
                "(or the stored value is damaged); restore the old BOT_SECRET_KEY or ask the "
                "user to set their key again"
            ) from None
