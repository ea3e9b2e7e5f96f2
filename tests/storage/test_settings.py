from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.models import GenerationSettings, SettingsScope
from bot.domain.ports import SettingsChange
from bot.storage import Repositories
from bot.storage.tables import settings

THREAD, CHANNEL, SERVER = "1200000000000000001", "1000000000000000002", "1000000000000000001"


async def layers(store: Repositories) -> dict[SettingsScope, GenerationSettings]:
    return await store.settings.settings_layers(
        thread_id=THREAD, channel_id=CHANNEL, guild_id=SERVER
    )


async def test_no_overrides_no_layers(store: Repositories) -> None:
    assert await layers(store) == {}
    assert (
        await store.settings.settings_layers(thread_id=None, channel_id=None, guild_id=None) == {}
    )


async def test_each_scope_is_its_own_layer(store: Repositories) -> None:
    await store.settings.update_settings(
        SettingsScope.SERVER, SERVER, SettingsChange(GenerationSettings(effort="low"))
    )
    await store.settings.update_settings(
        SettingsScope.CHANNEL,
        CHANNEL,
        SettingsChange(GenerationSettings(thinking="disabled", top_p=0.7)),
    )
    await store.settings.update_settings(
        SettingsScope.THREAD,
        THREAD,
        SettingsChange(GenerationSettings(system_prompt="Be terse. ✂️")),
    )
    # Other scopes' overrides, including one whose id equals a wanted id of another scope.
    await store.settings.update_settings(
        SettingsScope.THREAD, "999", SettingsChange(GenerationSettings(effort="high"))
    )
    await store.settings.update_settings(
        SettingsScope.SERVER, CHANNEL, SettingsChange(GenerationSettings(effort="high"))
    )

    assert await layers(store) == {
        SettingsScope.SERVER: GenerationSettings(effort="low"),
        SettingsScope.CHANNEL: GenerationSettings(thinking="disabled", top_p=0.7),
        SettingsScope.THREAD: GenerationSettings(system_prompt="Be terse. ✂️"),
    }
    assert await store.settings.settings_layers(
        thread_id=None, channel_id=None, guild_id=SERVER
    ) == {
        SettingsScope.SERVER: GenerationSettings(effort="low"),
    }


async def test_update_merges_into_the_scope_and_returns_the_result(store: Repositories) -> None:
    first = await store.settings.update_settings(
        SettingsScope.THREAD,
        THREAD,
        SettingsChange(GenerationSettings(thinking="auto", temperature=0.3)),
    )
    assert first == GenerationSettings(thinking="auto", temperature=0.3)

    second = await store.settings.update_settings(
        SettingsScope.THREAD,
        THREAD,
        SettingsChange(
            GenerationSettings(effort="minimal", max_completion_tokens=131072, temperature=1.25)
        ),
    )
    assert second == GenerationSettings(
        thinking="auto", effort="minimal", max_completion_tokens=131072, temperature=1.25
    )
    assert (await layers(store))[SettingsScope.THREAD] == second


async def test_clear_unsets_fields_and_an_empty_scope_disappears(
    store: Repositories, engine: AsyncEngine
) -> None:
    await store.settings.update_settings(
        SettingsScope.CHANNEL,
        CHANNEL,
        SettingsChange(GenerationSettings(thinking="enabled", top_p=0.95)),
    )
    after = await store.settings.update_settings(
        SettingsScope.CHANNEL, CHANNEL, SettingsChange(GenerationSettings(), clear=("thinking",))
    )
    assert after == GenerationSettings(top_p=0.95)

    # Set one field and clear another in one call.
    after = await store.settings.update_settings(
        SettingsScope.CHANNEL,
        CHANNEL,
        SettingsChange(GenerationSettings(effort="high"), clear=("top_p",)),
    )
    assert after == GenerationSettings(effort="high")

    after = await store.settings.update_settings(
        SettingsScope.CHANNEL, CHANNEL, SettingsChange(GenerationSettings(), clear=("effort",))
    )
    assert after == GenerationSettings()
    assert await layers(store) == {}
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(settings)) == 0


async def test_no_change_returns_the_current_overrides(store: Repositories) -> None:
    assert await store.settings.update_settings(
        SettingsScope.SERVER, SERVER, SettingsChange(GenerationSettings())
    ) == (GenerationSettings())
    await store.settings.update_settings(
        SettingsScope.SERVER, SERVER, SettingsChange(GenerationSettings(top_p=0.5))
    )
    assert await store.settings.update_settings(
        SettingsScope.SERVER, SERVER, SettingsChange(GenerationSettings())
    ) == (GenerationSettings(top_p=0.5))
    # Clearing what is not set is harmless.
    assert (
        await store.settings.update_settings(
            SettingsScope.THREAD, THREAD, SettingsChange(GenerationSettings(), clear=("top_p",))
        )
        == GenerationSettings()
    )


async def test_layers_resolve_thread_over_channel_over_server(store: Repositories) -> None:
    await store.settings.update_settings(
        SettingsScope.SERVER,
        SERVER,
        SettingsChange(GenerationSettings(effort="low", thinking="disabled")),
    )
    await store.settings.update_settings(
        SettingsScope.CHANNEL, CHANNEL, SettingsChange(GenerationSettings(effort="medium"))
    )
    await store.settings.update_settings(
        SettingsScope.THREAD, THREAD, SettingsChange(GenerationSettings(effort="high"))
    )
    found = await layers(store)
    effective = GenerationSettings()
    for scope in (SettingsScope.SERVER, SettingsScope.CHANNEL, SettingsScope.THREAD):
        effective = found[scope].merged_over(effective)
    assert effective == GenerationSettings(effort="high", thinking="disabled")


async def test_bad_update_requests_are_refused(store: Repositories) -> None:
    with pytest.raises(ValueError, match="unknown settings to clear: colour"):
        await store.settings.update_settings(
            SettingsScope.THREAD, THREAD, SettingsChange(GenerationSettings(), clear=("colour",))
        )
    with pytest.raises(ValueError, match="both set and cleared: effort"):
        await store.settings.update_settings(
            SettingsScope.THREAD,
            THREAD,
            SettingsChange(GenerationSettings(effort="low"), clear=("effort",)),
        )
    assert await layers(store) == {}
