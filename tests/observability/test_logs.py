"""No secret reaches a log line, whatever the logger and however it is formatted."""

from __future__ import annotations

import logging

from bot.observability.logs import SecretScrubbingFilter
from bot.observability.scrub import Scrubber


def _handler(scrubber: Scrubber) -> tuple[logging.Logger, list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(SecretScrubbingFilter(scrubber))
    logger = logging.getLogger(f"test.logs.{id(lines)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, lines


def test_configured_and_later_registered_secrets_are_scrubbed_from_messages() -> None:
    scrubber = Scrubber(["bot-token-123456"])
    logger, lines = _handler(scrubber)
    scrubber.add_secret("user-own-key-abcdef")

    logger.warning("step failed: %s", "Incorrect API key provided: user-own-key-abcdef")
    logger.info("token is %s", "bot-token-123456")

    assert "user-own-key-abcdef" not in "\n".join(lines)
    assert "bot-token-123456" not in "\n".join(lines)
    assert lines[0] == "step failed: Incorrect API key provided: [secret]"


def test_exception_text_is_scrubbed_too() -> None:
    scrubber = Scrubber(["hunter2-secret-value"])
    logger, lines = _handler(scrubber)
    try:
        raise RuntimeError("rejected key hunter2-secret-value")
    except RuntimeError:
        logger.exception("call failed")
    assert "hunter2-secret-value" not in "\n".join(lines)
    assert "RuntimeError: rejected key [secret]" in lines[0]
