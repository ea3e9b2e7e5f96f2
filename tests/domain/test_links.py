"""Which links a message holds, and which host names an operator may allow."""

from __future__ import annotations

import pytest

from bot.domain.links import is_host_name, linked_urls


def test_links_are_found_in_order_once_without_trailing_punctuation() -> None:
    text = (
        "see https://a.test/x, and (https://b.test/wiki/Foo_(bar)) or <https://c.test/y>. "
        "again https://a.test/x! not ftp://d.test/z nor https:// alone"
    )
    assert linked_urls(text) == [
        "https://a.test/x",
        "https://b.test/wiki/Foo_(bar)",
        "https://c.test/y",
    ]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("wiki.corp", True),
        ("localhost", True),
        ("wiki.corp.", True),
        ("10.0.0.1", False),
        ("::1", False),
        ("[::1]", False),
        ("a..b", False),
        ("-bad.corp", False),
        ("", False),
    ],
)
def test_only_host_names_may_be_allowed(value: str, ok: bool) -> None:
    assert is_host_name(value) is ok
