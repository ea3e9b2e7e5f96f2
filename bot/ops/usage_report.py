"""The operator's cost report (``seed-bot usage``): turns, fal units and dollars per server,
per user or per UTC day over a period, from the turn costs table, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from bot.domain.costs import Spending, format_usd
from bot.storage.costs import ReportBy
from bot.storage.engine import create_engine
from bot.storage.repositories import sql_repositories

ReportFormat = Literal["table", "csv", "json"]
REPORT_BYS: tuple[ReportBy, ...] = ("guild", "user", "day")
REPORT_FORMATS: tuple[ReportFormat, ...] = ("table", "csv", "json")
# What a server-less row (direct messages) is called in the report.
DIRECT_MESSAGES = "DM"

Rows = Sequence[tuple[str, Spending]]


async def usage_rows(
    url: str, *, since: datetime | None, until: datetime | None, by: ReportBy
) -> list[tuple[str, Spending]]:
    engine = create_engine(url)
    try:
        rows = await sql_repositories(engine).costs.report(since=since, until=until, by=by)
    finally:
        await engine.dispose()
    if by == "guild":
        rows = [(key or DIRECT_MESSAGES, spent) for key, spent in rows]
    return rows


def total(rows: Rows) -> Spending:
    return Spending(
        sum(s.turns for _, s in rows), sum(s.units for _, s in rows), sum(s.usd for _, s in rows)
    )


def render(
    rows: Rows,
    *,
    by: ReportBy,
    fmt: ReportFormat,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """The report text; a table ends with the period's total."""
    if fmt == "json":
        return json.dumps(
            {
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "by": by,
                "rows": [_record(by, key, spent) for key, spent in rows],
                "total": _record(None, "", total(rows)),
            },
            indent=2,
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by, "turns", "units", "usd"])
        for key, spent in rows:
            writer.writerow([key, spent.turns, spent.units, f"{spent.usd:.6f}"])
        return out.getvalue().rstrip("\n")
    table = [[by, "turns", "units", "usd"]]
    table += [[key, f"{s.turns:,}", f"{s.units:,}", format_usd(s.usd)] for key, s in rows]
    whole = total(rows)
    table.append(["total", f"{whole.turns:,}", f"{whole.units:,}", format_usd(whole.usd)])
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for n, row in enumerate(table):
        if n == len(table) - 1:
            lines.append("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _record(by: ReportBy | None, key: str, spent: Spending) -> dict[str, object]:
    record: dict[str, object] = {by: key} if by is not None else {}
    record.update(turns=spent.turns, units=spent.units, usd=round(spent.usd, 6))
    return record
