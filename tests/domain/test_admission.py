"""A model call needs an admission ticket: a call site that skips the check, or forges a
ticket, does not type-check (the type checker is run on such call sites here), and a forged
ticket is refused at run time too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.domain.access import AccessPolicy, Requester
from bot.domain.admission import Admission, admit
from bot.domain.errors import AccessDenied
from bot.domain.models import Payer

ROOT = Path(__file__).resolve().parents[2]

CALL_SITES = textwrap.dedent(
    """\
    from bot.domain.access import AccessPolicy, Requester
    from bot.domain.admission import Admission, admit
    from bot.domain.models import Incoming, Payer
    from bot.domain.flows import Redo
    from bot.domain.service import ConversationService


    async def skips_the_check(service: ConversationService, incoming: Incoming) -> None:
        await service.respond(incoming, batchable=False)  # error: no ticket


    async def redoes_unchecked(service: ConversationService) -> None:
        await service.redo(Redo("1"))  # error: no ticket


    async def forges_a_ticket(service: ConversationService, incoming: Incoming) -> None:
        await service.respond(incoming, Admission(Payer("1", None)))  # error: no key


    async def is_admitted(service: ConversationService, incoming: Incoming) -> None:
        ticket = await admit(
            AccessPolicy(), Requester("1"), Payer("1", None), budgets=None, quotas=None
        )
        await service.respond(incoming, ticket, batchable=False)
        await service.redo(Redo("1"), ticket)
    """
)


@pytest.mark.timeout(600)
def test_a_model_call_without_an_admission_does_not_type_check(tmp_path: Path) -> None:
    snippet = tmp_path / "call_sites.py"
    snippet.write_text(CALL_SITES)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    lines = CALL_SITES.splitlines()
    flagged = {lines[int(error.split(":")[1]) - 1].split("# ")[-1] for error in errors}
    assert flagged == {"error: no ticket", "error: no key"}, result.stdout + result.stderr
    wrong = [e for e in errors if "# error" not in lines[int(e.split(":")[1]) - 1]]
    assert not wrong, result.stdout
    assert len({e.split(":")[1] for e in errors}) == 3, result.stdout


def test_a_forged_ticket_is_refused_at_run_time() -> None:
    with pytest.raises(TypeError):
        Admission(Payer("1", None), object())  # type: ignore[arg-type]


async def test_the_access_lists_refuse_before_a_ticket_is_issued() -> None:
    policy = AccessPolicy(deny_users=frozenset({"7"}))
    with pytest.raises(AccessDenied, match="not allowed"):
        await admit(policy, Requester("7"), Payer("7", None), budgets=None, quotas=None)
    ticket = await admit(policy, Requester("8"), Payer("8", "g"), budgets=None, quotas=None)
    assert ticket.payer == Payer("8", "g")
