"""The end-to-end harness of tests/chat, shared with the reliability tests."""

from tests.chat.conftest import harness, make_harness  # noqa: F401
