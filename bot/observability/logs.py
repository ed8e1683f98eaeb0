"""Logging set-up: one format, and no secret in any log line.

A provider's error text can echo the key that was sent ("Incorrect API key provided: sk-..."),
and a user's own key is exactly such a key. Every record passes through the same `Scrubber` that
guards the traces before any handler formats it, so configured secrets, keys registered later
(users' own keys) and anything shaped like a credential come out as `[secret]`.
"""

from __future__ import annotations

import logging

from bot.observability.scrub import Scrubber

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The scrubber of the installed filter, so secrets learnt at run time (a user's own key, when it
# is decrypted) are scrubbed from logs as well.
_installed: list[Scrubber] = []


def register_secret(secret: str | None) -> None:
    for scrubber in _installed:
        scrubber.add_secret(secret)


class SecretScrubbingFilter(logging.Filter):
    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as logging would
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.scrubber.text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.scrubber.text(record.exc_text)
        return True


def install_log_scrubbing(scrubber: Scrubber, level: str | int = "INFO") -> SecretScrubbingFilter:
    """Configure the root logger once and scrub every record on every handler."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    else:
        root.setLevel(level)
    scrub = SecretScrubbingFilter(scrubber)
    _installed[:] = [scrubber]
    for handler in root.handlers:
        if not any(isinstance(f, SecretScrubbingFilter) for f in handler.filters):
            handler.addFilter(scrub)
    return scrub
