"""The bot's reads of the open web (linked pages), kept apart from its Discord and fal traffic."""
