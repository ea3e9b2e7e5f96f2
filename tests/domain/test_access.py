"""Allow and deny lists."""

from __future__ import annotations

import pytest

from bot.domain.access import AccessPolicy, Requester, denial_reason

F = frozenset
ALICE = Requester("1", role_ids=["10"], channel_ids=["100", "200", "300"], guild_id="9")
# Alice in a server that did not add the bot (she installed the app herself).
AWAY = Requester("1", role_ids=["10"], channel_ids=["100"], guild_id="9", bot_absent=True)


@pytest.mark.parametrize(
    ("policy", "who", "allowed"),
    [
        (AccessPolicy(), ALICE, True),
        (AccessPolicy(deny_users=F({"1"})), ALICE, False),
        (AccessPolicy(allow_users=F({"2"})), ALICE, False),
        (AccessPolicy(allow_users=F({"1"}), deny_users=F({"1"})), ALICE, False),  # deny wins
        (AccessPolicy(deny_roles=F({"10"})), ALICE, False),
        (AccessPolicy(allow_roles=F({"11"})), ALICE, False),
        (AccessPolicy(allow_roles=F({"10"})), ALICE, True),
        (AccessPolicy(deny_channels=F({"300"})), ALICE, False),  # the category
        (AccessPolicy(allow_channels=F({"200"})), ALICE, True),  # the parent of the thread
        (AccessPolicy(allow_channels=F({"999"})), ALICE, False),
        (AccessPolicy(deny_guilds=F({"9"})), ALICE, False),
        (AccessPolicy(allow_guilds=F({"8"})), ALICE, False),
        # Outside the bot's servers (a DM, a group DM, a server without the bot) the server,
        # role and channel allow lists cannot be met: refused while one is set, unless the
        # operator opens those places; then the user lists (and every deny list) judge.
        (AccessPolicy(allow_roles=F({"11"}), allow_guilds=F({"8"})), Requester("1"), False),
        (AccessPolicy(allow_guilds=F({"9"})), Requester("1"), False),
        (AccessPolicy(allow_roles=F({"10"})), Requester("1"), False),
        (AccessPolicy(allow_channels=F({"100"})), Requester("1"), False),
        (AccessPolicy(allow_guilds=F({"9"})), AWAY, False),
        (AccessPolicy(allow_guilds=F({"9"}), allow_outside_servers=True), Requester("1"), True),
        (AccessPolicy(allow_roles=F({"10"}), allow_outside_servers=True), AWAY, True),
        (AccessPolicy(allow_users=F({"2"}), allow_outside_servers=True), Requester("1"), False),
        (AccessPolicy(), Requester("1"), True),
        (AccessPolicy(allow_users=F({"1"})), Requester("1"), True),
        (AccessPolicy(deny_users=F({"1"})), Requester("1"), False),
        (AccessPolicy(deny_guilds=F({"9"})), AWAY, False),
        (AccessPolicy(deny_channels=F({"100"})), AWAY, False),
        (AccessPolicy(deny_roles=F({"10"})), AWAY, False),
    ],
)
def test_access(policy: AccessPolicy, who: Requester, allowed: bool) -> None:
    reason = denial_reason(policy, who)
    assert (reason is None) == allowed
