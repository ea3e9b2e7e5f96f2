"""The page reader's address rule and its refusals before any connection."""

from __future__ import annotations

import ipaddress

import pytest
from yarl import URL

from bot.web.pages import Network, html_text, is_public, link_problem


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.100.100.200", False),  # shared address space (a metadata service too)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),  # a metadata service over IPv6
        ("::ffff:127.0.0.1", False),  # IPv4 written as IPv6
        ("::ffff:93.184.216.34", True),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("ff02::1", False),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://a.test/x", "only http(s) links are read"),
        ("file:///etc/passwd", "only http(s) links are read"),
        ("https://user:pw@a.test/", "the link carries credentials"),
        ("http://127.0.0.1/", "it points to a private address"),
        ("http://[::1]:8080/", "it points to a private address"),
        ("http://localhost/", "it points to a private address"),
        ("http://169.254.169.254/latest/meta-data/", "it points to a private address"),
        ("https://a.test/page", None),
    ],
)
def test_links_refused_before_any_connection(url: str, problem: str | None) -> None:
    assert link_problem(URL(url), Network()) == problem


def test_an_allowed_host_name_may_be_private_but_not_its_address() -> None:
    network = Network(allow_private_hosts=frozenset({"localhost"}))
    assert link_problem(URL("http://localhost/"), network) is None
    assert link_problem(URL("http://127.0.0.1/"), network) == "it points to a private address"


def test_html_becomes_its_main_text_one_line_per_block() -> None:
    html = (
        b"<html><head><title> A  page </title><style>p{}</style></head><body><nav>menu</nav>"
        b"<main><h1>Title</h1><p>one\n<b>bold</b> line</p><ul><li>a</li><li>b</li></ul>"
        b"<script>alert(1)</script></main><footer>foot</footer></body></html>"
    )
    assert html_text(html, None) == ("A page", "Title\none bold line\na\nb")
