"""The end-to-end harness of tests/chat, shared with the reliability tests, and the log
capture the reliability tests share."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tests.chat.conftest import (  # noqa: F401
    chat_backend,
    chat_database_url,
    harness,
    make_harness,
    migrated_postgres_template,
)
from tests.reliability.racing import postgres_url  # noqa: F401


class KeptRecords(logging.Handler):
    """Keeps every record at ``level`` or above (caplog sees only what propagates to root)."""

    def __init__(self, level: int) -> None:
        super().__init__(level=level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def bot_errors() -> Iterator[KeptRecords]:
    """ERROR records of the bot's own loggers (a crashed turn task logs one)."""
    handler = KeptRecords(logging.ERROR)
    logger = logging.getLogger("bot")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
