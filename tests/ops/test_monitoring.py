"""What an operator watches: the Grafana dashboard queries only metrics the bot's /metrics
exports, the monitoring stack of compose.yaml is wired to it, and the metrics it added
(Discord REST requests and 429s, turns waiting for a slot, dollars) count what happens."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.discord import run_client
from tests.fakes.discord.events import HttpRequest
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import FakeFal
from tests.ops.test_health import bot_with_http, get, samples

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "seed-bot.json"

# PromQL words that are not metric names: functions are followed by "(" and dropped anyway.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, label lists, ranges,
    strings, functions and keywords left out)."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    return {name for name in _NAME.findall(bare) if name not in _KEYWORDS}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def exported_names(text: str) -> set[str]:
    """Every series name an exposition can carry: a counter's ``_total``, a histogram's
    ``_bucket``/``_sum``/``_count``, a gauge's own name (families without samples yet,
    such as labelled counters nothing has counted, included)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_the_name_finder_reads_promql() -> None:
    expr = (
        'sum by (outcome, kind) (rate(seed_bot_turns_total{outcome=~"failed|x"}[$__rate_interval]))'
        " * 60 / on (le) histogram_quantile(0.9, sum by (le) (rate(other_seconds_bucket[5m])))"
    )
    assert metric_names(expr) == {"seed_bot_turns_total", "other_seconds_bucket"}


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queried = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    assert {
        "seed_bot_turns_total",  # turns and outcomes
        "seed_bot_turn_duration_seconds_bucket",  # time to answer
        "seed_bot_turns_waiting",  # queued
        "seed_bot_turns_in_flight",  # in flight
        "seed_bot_discord_requests_total",  # Discord REST calls and 429s
        "seed_bot_fal_calls_total",  # fal errors by kind
        "seed_bot_database_outages_total",
        "seed_bot_cost_usd_total",  # dollars per hour
    } <= queried


@pytest.mark.timeout(30)
async def test_every_metric_the_dashboard_queries_is_exported(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    """The bot as the entry point builds it, /metrics over HTTP, before any turn (a
    labelled counter is exported from the start, without samples)."""
    async with (
        bot_with_http(fake_discord, fake_fal, tmp_path) as (app, base),
        run_client(app.bot, fake_discord),
    ):
        status, text = await get(f"{base}/metrics")
    assert status == 200
    exported = exported_names(text)
    for expr in dashboard_exprs():
        missing = metric_names(expr) - exported
        assert not missing, f"{expr!r} queries {sorted(missing)}, which /metrics lacks"


def test_the_monitoring_profile_is_wired_to_the_files_in_the_repository() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), mount
            else:
                assert source in compose["volumes"], mount
    # Prometheus scrapes the bot where its image listens.
    prometheus = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["bot:9464"]
    assert "SEED_BOT_HTTP__LISTEN=0.0.0.0:9464" in (ROOT / "Containerfile").read_text()
    # Grafana: the dashboard's data source is the provisioned one; the provider reads the
    # folder compose mounts the dashboards at.
    provisioning = MONITORING / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    uid = source["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == uid for p in panels)
    provider = yaml.safe_load((provisioning / "dashboards" / "seed-bot.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert f"./monitoring/grafana/dashboards:{folder}:ro" in services["grafana"]["volumes"]


def test_the_bots_data_outlives_down_and_up() -> None:
    """/data holds the submission journal (beside a PostgreSQL database too): a named
    volume, not the anonymous one the image's VOLUME would get anew."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    mounts = [m.split(":") for m in compose["services"]["bot"]["volumes"]]
    named = [source for source, target, *_ in mounts if target == "/data"]
    assert named and named[0] in compose["volumes"]


def by_method_and_status(requests: list[HttpRequest]) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for request in requests:
        key = (request.method, str(request.status))
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.timeout(30)
async def test_discord_requests_and_429s_and_dollars_are_counted(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    world = discord_world
    async with (
        bot_with_http(fake_discord, fake_fal, tmp_path) as (app, base),
        run_client(app.bot, fake_discord),
    ):
        await app.bot.resumed.wait()
        fake_discord.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.01)
        since = fake_discord.mark()
        me = fake_discord.bot_user.id
        message = await fake_discord.send_message(world.alice, world.channel, f"<@{me}> hi")
        thread = await fake_discord.wait_for_thread(
            world.channel, from_message=message, since=since
        )
        await fake_discord.wait_for_message(thread, contains="echo:", since=since, timeout=10)
        # The bot has seen the answers to these (it posted the answer after them)...
        before = by_method_and_status(fake_discord.events_of(HttpRequest))
        status, text = await get(f"{base}/metrics")
        # ...and cannot have counted more than the fake answered by now.
        after = by_method_and_status(fake_discord.events_of(HttpRequest))
    assert status == 200
    values = samples(text)
    counted = {
        (dict(labels)["method"], dict(labels)["status"]): value
        for (name, labels), value in values.items()
        if name == "seed_bot_discord_requests_total"
    }
    for key in before.keys() | after.keys() | counted.keys():
        assert before.get(key, 0) <= counted.get(key, 0) <= after.get(key, 0), key
    assert counted[("POST", "429")] == 1
    assert values[("seed_bot_turns_waiting", frozenset())] == 0
    dollars = sum(value for (name, _), value in values.items() if name == "seed_bot_cost_usd_total")
    assert dollars > 0


def test_the_dashboards_panels_fit_its_grid_without_overlapping() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (panel["title"], taken[(x, y)])
                taken[(x, y)] = panel["title"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
