"""The end-to-end harness of tests/chat, shared with the reliability tests."""

from tests.chat.conftest import chat_backend, chat_database_url, harness, make_harness  # noqa: F401
from tests.reliability.racing import postgres_url  # noqa: F401
