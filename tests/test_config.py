"""Config loading: defaults, file, environment, and every kind of problem reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Config, config_reference, load_config, render_example
from bot.config_keys import Secret
from bot.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, env: dict[str, str] | None = None, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {}, **kw)  # type: ignore[arg-type]
    return caught.value.problems


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config == Config()
    assert config.database.url == "sqlite+aiosqlite:///data/seed-bot.db"
    assert config.database.should_auto_migrate
    assert config.discord.api_base == "https://discord.com/api/v10"


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[limits]
max_in_flight = 4
[model]
thinking = "auto"
temperature = 0.5
[access]
deny_users = ["123", 456]
""",
    )
    env = {
        "SEED_BOT_LIMITS__MAX_IN_FLIGHT": "9",
        "SEED_BOT_DATABASE__URL": "postgresql+asyncpg://bot@db/seed",
        "SEED_BOT_DISCORD__ALLOW_DMS": "yes",
        "SEED_BOT_ACCESS__ALLOW_GUILDS": "1, 2,3",
        "SEED_BOT_MODEL__TOP_P": "0.9",
    }
    config = load_config(path, env)
    assert config.limits.max_in_flight == 9  # environment wins over the file
    assert config.model.thinking == "auto"
    assert config.model.temperature == 0.5
    assert config.model.top_p == 0.9
    assert config.access.deny_users == ("123", "456")
    assert config.access.allow_guilds == ("1", "2", "3")
    assert config.discord.allow_dms is True
    assert config.database.url.startswith("postgresql+asyncpg://")
    assert not config.database.should_auto_migrate  # PostgreSQL: migrate deliberately


def test_secrets_come_from_the_usual_variables_and_stay_hidden(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "from-file"\n[fal]\nkey = "file-key"\n')
    env = {"DISCORD_TOKEN": "tok-123-secret", "FAL_KEY_ID": "kid", "FAL_KEY_SECRET": "ksecret"}
    config = load_config(path, env, required_secrets=("discord", "fal"))
    assert config.discord.token.get() == "tok-123-secret"
    assert config.fal.key.get() == "kid:ksecret"
    shown = repr(config) + str(config)
    for secret in ("tok-123-secret", "kid:ksecret", "from-file", "file-key"):
        assert secret not in shown
    assert repr(Secret("x")) == "Secret('********')"


def test_missing_secrets_are_reported_when_needed(tmp_path: Path) -> None:
    problems = problems_of(
        None, {"SEED_BOT_CONFIG": str(write(tmp_path, ""))}, required_secrets=("discord", "fal")
    )
    assert any(p.startswith("DISCORD_TOKEN: not set") for p in problems)
    assert any(p.startswith("FAL_KEY: not set") for p in problems)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[nonsense]
x = 1
[discord]
api_base = "ftp://example"
gateway_url = "https://not-a-websocket"
allow_dms = "sometimes"
colour = "blue"
dev_guild_id = "abc"
[fal]
turn_timeout = -1
attachment_mode = "carrier-pigeon"
key = 42
[model]
thinking = "maybe"
temperature = 3.5
max_completion_tokens = 1.5
context_budget_tokens = 999999
[limits]
max_in_flight = 0
user_requests = "many"
[access]
deny_users = ["bob"]
denied_reply = "shout"
[database]
url = "mysql://x"
[logging]
level = "LOUD"
""",
    )
    problems = problems_of(path, {"SEED_BOT_LIMITS__USER_WINDOW_SECONDS": "soon"})
    expected = [
        r"^\[nonsense\]: unknown section",
        r"^\[discord\] api_base = 'ftp://example': must be an http\(s\) URL",
        r"^\[discord\] gateway_url = .*must be a ws\(s\) URL",
        r"^\[discord\] allow_dms = 'sometimes': must be true or false",
        r"^\[discord\] colour: unknown key",
        r"^\[discord\] dev_guild_id = 'abc': must be a Discord id",
        r"^\[fal\] turn_timeout = -1: must be greater than 0",
        r"^\[fal\] attachment_mode = 'carrier-pigeon': must be one of 'fal_storage'",
        r"^\[fal\] key = \(hidden\): must be a string",
        r"^\[model\] thinking = 'maybe': must be one of 'enabled', 'disabled', 'auto'",
        r"^\[model\] temperature = 3.5: must be between 0.0 and 2.0",
        r"^\[model\] max_completion_tokens = 1.5: must be a whole number",
        r"^\[model\] context_budget_tokens = 999999: must be between",
        r"^\[limits\] max_in_flight = 0: must be greater than 0",
        r"^\[limits\] user_requests = 'many': must be a whole number",
        r"^SEED_BOT_LIMITS__USER_WINDOW_SECONDS = 'soon': must be a whole number",
        r"^\[access\] deny_users = \['bob'\]: has entries that are not Discord ids: bob",
        r"^\[access\] denied_reply = 'shout': must be one of 'quiet', 'notice'",
        r"^\[database\] url = 'mysql://x': must start with sqlite\+aiosqlite://",
        r"^\[logging\] level = 'LOUD': must be one of",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    assert len(problems) == len(expected)


def test_type_problems_name_the_expected_form(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "[limits]\nmax_in_flight = true\n"))
    assert problems == [
        "[limits] max_in_flight = True: must be a whole number; expected a whole number"
    ]


def test_shard_ids_need_a_matching_count(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, '[discord]\nshard_ids = ["0", "3"]\nshard_count = 2\n'))
    assert problems == ["[discord] shard_ids: every id must be below shard_count (2)"]
    problems = problems_of(write(tmp_path, '[discord]\nshard_ids = ["0"]\n'))
    assert problems == ["[discord] shard_ids: needs shard_count set too"]


def test_unreadable_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "absent.toml")[0].endswith(
        "no such file (copy config.example.toml to start)"
    )
    bad = write(tmp_path, "[discord\n")
    assert "not valid TOML" in problems_of(bad)[0]
    table = write(tmp_path, 'discord = "x"\n')
    assert problems_of(table) == ["[discord]: must be a table"]


def test_example_file_documents_every_key_with_its_default() -> None:
    example = ROOT / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    assert text == render_example(), "regenerate: python -c 'from bot.config import ...'"
    config = load_config(example, {})
    assert config == Config()  # the example shows the defaults, nothing else
    for section, key, _default, doc in config_reference():
        assert f"[{section}]" in text
        assert re.search(rf"^#? ?{key} =", text, re.MULTILINE), key
        assert doc, f"{section}.{key} has no documentation"


def test_bad_budgets_and_prices_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[costs]\nusd_per_unit = -0.1\n[budgets]\nuser_daily_usd = "five"\n'
        "guild_monthly_usd = -5\n[limits]\nmax_in_flight = 0\n",
    )
    problems = problems_of(path, {"SEED_BOT_BUDGETS__TOTAL_MONTHLY_USD": "lots"})
    assert problems == [
        "[limits] max_in_flight = 0: must be greater than 0",
        "[costs] usd_per_unit = -0.1: must be 0 or more",
        "[budgets] user_daily_usd = 'five': must be a number; expected a number",
        "[budgets] guild_monthly_usd = -5: must be 0 or more",
        "SEED_BOT_BUDGETS__TOTAL_MONTHLY_USD = 'lots': must be a number; expected a number",
    ]


def test_budgets_and_the_price_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "[costs]\nusd_per_unit = 2e-7\n[budgets]\nguild_daily_usd = 5\n")
    config = load_config(path, {"SEED_BOT_BUDGETS__USER_MONTHLY_USD": "1.5"})
    assert config.costs.usd_per_unit == 2e-7
    rules = config.budgets.rules()
    assert (rules.guild_daily_usd, rules.user_monthly_usd, rules.user_daily_usd) == (5.0, 1.5, 0.0)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw-sec-1@h/db",
        "mysql://user:pw-sec-1@db.internal:3306/seed",
        # long enough to be clipped in the message: the clip must not show part of it
        "postgresql://a-rather-long-user-name-for-the-bot:pw-sec-1-and-more@db.example/seed",
        # unescaped '@' and '/' inside the password
        "postgres://bot:pw-sec-1@x/y@db.example/seed",
    ],
)
def test_a_refused_database_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"SEED_BOT_DATABASE__URL": url}, required_secrets=())
    problem = "\n".join(refused.value.problems)
    assert "SEED_BOT_DATABASE__URL = " in problem and ":***@" in problem
    assert "pw-sec-1" not in problem


def test_personas_are_read_and_every_problem_is_listed(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[model]\npersona = "poet"\n\n[personas.poet]\ndescription = " Verse "\n'
        'system_prompt = "You answer in verse."\ntemperature = 1\n'
    )
    config = load_config(good, {})
    poet = config.personas["poet"]
    assert poet.description == "Verse"
    assert poet.settings.system_prompt == "You answer in verse."
    assert poet.settings.temperature == 1
    assert config.model.persona == "poet"

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[model]\npersona = "nobody"\n\n'
        '[personas.Bad-Name]\ndescription = "x"\nsystem_prompt = "x"\n\n'
        '[personas.nodesc]\nsystem_prompt = "x"\n\n'
        '[personas.noprompt]\ndescription = "x"\n\n'
        '[personas.wrong]\ndescription = "x"\nsystem_prompt = "x"\ntemperature = 5\n'
        'effort = "extreme"\nmax_completion_tokens = "many"\ncolour = "blue"\n'
        f'\n[personas.long]\ndescription = "{"d" * 101}"\nsystem_prompt = "x"\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_config(bad, {})
    problems = refused.value.problems
    expected = [
        "[personas.Bad-Name]: a persona's name is",
        "[personas.nodesc] description: required",
        "[personas.noprompt] system_prompt: required",
        "[personas.wrong] temperature: must be between 0 and 2 (got 5)",
        "[personas.wrong] effort: must be one of",
        "[personas.wrong] max_completion_tokens: must be a whole number",
        "[personas.wrong] colour: unknown key",
        "[personas.long] description: at most 100 characters (got 101)",
        "[model] persona: no [personas.nobody]",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
