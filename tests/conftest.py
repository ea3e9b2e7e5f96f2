"""Shared fixtures: the fakes are pytest plugins of their own."""

pytest_plugins = ["tests.fakes.fal_fixtures", "tests.fakes.discord.fixtures"]
