"""fal queue client for Seed 2.0 Mini: ``FalClient`` implements ``ModelClient``."""

from bot.fal.client import FalClient, app_path
from bot.fal.settings import DEFAULT_ENDPOINT, FalSettings

__all__ = ["DEFAULT_ENDPOINT", "FalClient", "FalSettings", "app_path"]
