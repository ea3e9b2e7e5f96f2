"""The end-to-end harness of tests/chat, shared with the reliability tests."""

from tests.chat.conftest import (  # noqa: F401
    chat_backend,
    chat_database_url,
    harness,
    make_harness,
    migrated_postgres_template,
)
from tests.reliability.racing import postgres_url  # noqa: F401
