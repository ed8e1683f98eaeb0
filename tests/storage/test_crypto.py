"""Users' API keys at rest: never the key itself, and a changed BOT_SECRET_KEY is a clear error."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.storage.crypto import KeyCipher, KeyDecryptionError
from bot.storage.repositories import StorageConfigError

PLAIN = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"


def test_the_stored_value_is_not_the_key_and_decrypts_back() -> None:
    cipher = KeyCipher("first-secret-0123456789")
    stored = cipher.encrypt(PLAIN)
    assert PLAIN not in stored
    assert "abcdefghijklmnop" not in stored
    assert stored.startswith("v1:")
    assert cipher.encrypt(PLAIN) != stored  # a fresh IV every time
    assert cipher.decrypt(stored) == PLAIN
    # Another cipher from the same secret (a restart) reads it too.
    assert KeyCipher("first-secret-0123456789").decrypt(stored) == PLAIN


def test_a_changed_secret_is_a_clear_error_not_garbage() -> None:
    stored = KeyCipher("first-secret-0123456789").encrypt(PLAIN)
    with pytest.raises(KeyDecryptionError, match="BOT_SECRET_KEY changed") as caught:
        KeyCipher("second-secret-0123456789").decrypt(stored)
    assert PLAIN not in str(caught.value)
    assert isinstance(caught.value, StorageConfigError)


def test_a_damaged_value_is_refused() -> None:
    cipher = KeyCipher("first-secret-0123456789")
    stored = cipher.encrypt(PLAIN)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(KeyDecryptionError):
        cipher.decrypt(tampered)
    with pytest.raises(KeyDecryptionError, match="format"):
        cipher.decrypt(PLAIN)


def test_from_settings_needs_bot_secret_key() -> None:
    with pytest.raises(StorageConfigError, match="BOT_SECRET_KEY"):
        KeyCipher.from_settings(load_settings(_env_file=None, bot_secret_key=None))
    cipher = KeyCipher.from_settings(load_settings(_env_file=None, bot_secret_key="s3cret-xyz"))
    assert "s3cret" not in repr(cipher)
    assert cipher.decrypt(cipher.encrypt(PLAIN)) == PLAIN
