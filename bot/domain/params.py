"""The generation parameters, each declared once: its name, kind, range, the model's
default, its key in the model's input, how people see it named and where it may be set.
Validation, settings resolution, ``/settings``, the settings commands, the request body,
the settings table and the ``[model]`` section of the config (and so its example file)
all follow from these descriptors.

Adding a parameter: a ``Param`` in ``PARAMS``, its typed field in ``GenerationSettings``
(the test of this module checks the two agree), the same-named field in ``ModelRequest``
when its wire key is new, and a migration adding its column."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bot.domain.errors import InvalidSetting

Thinking = Literal["enabled", "disabled", "auto"]
Effort = Literal["minimal", "low", "medium", "high"]
Autoreply = Literal["off", "threads", "inline"]
THINKING_MODES: tuple[Thinking, ...] = get_args(Thinking)
EFFORT_LEVELS: tuple[Effort, ...] = get_args(Effort)
AUTOREPLY_MODES: tuple[Autoreply, ...] = get_args(Autoreply)


class SettingsScope(enum.StrEnum):
    """Where a settings layer lives, highest precedence first. Below them come the config
    file and the model's own default."""

    THREAD = "thread"
    CHANNEL = "channel"
    SERVER = "server"


class Kind(enum.Enum):
    """What a parameter's values are: it decides the check, the column and the option."""

    CHOICE = "choice"  # one of ``choices``
    TEXT = "text"  # free text, stripped, at most ``max_chars``
    WHOLE = "whole"  # a whole number within ``bounds``
    NUMBER = "number"  # a finite number within ``bounds``


ALL_SCOPES = frozenset(SettingsScope)


@dataclass(frozen=True, slots=True)
class Param:
    """One generation parameter.

    ``name`` is its setting's name everywhere the bot stores or shows it (the settings
    field and column, the ``[model]`` config key, the ``/settings`` row); ``wire_key`` its
    key in the model's input (seed-api.md; None for a setting of the bot's own, which is
    stored and shown but never sent). ``command`` is the slash command that sets it:
    a choice gets a command of its own (described by ``command_doc``), the numbers share
    ``/params``; ``option`` names it there and ``hint`` describes that option; ``label``
    names it in the command's confirmation, ``shown`` in an error ("the effort setting");
    ``doc`` documents the config key. ``scopes`` are the settings layers it may be set at
    (the config file and the model default always apply).

    Left out, ``wire_key``, ``command``, ``option`` and ``label`` are the name, and
    ``shown`` is "the <label> setting"."""

    name: str
    kind: Kind
    doc: str
    hint: str
    wire_key: str | None = ""
    command: str = ""
    option: str = ""
    label: str = ""
    shown: str = ""
    command_doc: str = ""
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] = (0, 0)
    max_chars: int = 0
    model_default: object = None
    scopes: frozenset[SettingsScope] = ALL_SCOPES

    def __post_init__(self) -> None:
        for key in ("wire_key", "command", "option", "label"):
            if getattr(self, key) == "":
                object.__setattr__(self, key, self.name)
        if not self.shown:
            object.__setattr__(self, "shown", f"the {self.label.lower()} setting")

    @property
    def range_text(self) -> str:
        """The accepted range as people read it ("0–2")."""
        lo, hi = self.bounds
        return f"{_num(lo)}–{_num(hi)}"

    def clean(self, value: Any) -> Any:
        """``value`` as stored, or ``InvalidSetting`` naming this parameter and what it
        accepts."""
        lo, hi = self.bounds
        if self.kind is Kind.CHOICE:
            if value not in self.choices:
                raise InvalidSetting(self.name, f"must be one of {', '.join(self.choices)}")
            return value
        if self.kind is Kind.TEXT:
            text = str(value).strip()
            if not text:
                raise InvalidSetting(self.name, "is empty; use the clear option to remove it")
            if len(text) > self.max_chars:
                raise InvalidSetting(
                    self.name,
                    f"is {len(text)} characters; at most {self.max_chars} are allowed",
                )
            return text
        if self.kind is Kind.WHOLE:
            if not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidSetting(
                    self.name,
                    f"must be a whole number between {_num(lo)} and {_num(hi)} (got {value})",
                )
            return value
        assert isinstance(value, int | float)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidSetting(
                self.name, f"must be between {_num(lo)} and {_num(hi)} (got {_num(value)})"
            )
        return value


def _num(value: float) -> str:
    """A bound as people read it: whole numbers in full, others shortest (0.7, 2)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


# The model's documented defaults and the ranges we accept (seed-api.md).
MODEL_DEFAULT_MAX_TOKENS = 4096
MAX_SYSTEM_PROMPT_CHARS = 8000

THINKING = Param(
    name="thinking",
    kind=Kind.CHOICE,
    doc="Default thinking mode: enabled, disabled or auto.",
    command_doc="Set whether the model thinks before answering",
    label="Thinking",
    option="mode",
    hint="enabled, disabled or auto",
    choices=THINKING_MODES,
    model_default="enabled",
)
EFFORT = Param(
    name="effort",
    wire_key="reasoning_effort",
    kind=Kind.CHOICE,
    doc="Default reasoning effort: minimal, low, medium, high.",
    command_doc="Set how hard the model thinks",
    label="Effort",
    option="level",
    hint="minimal, low, medium or high",
    choices=EFFORT_LEVELS,
)
SYSTEM_PROMPT = Param(
    name="system_prompt",
    kind=Kind.TEXT,
    shown="the system prompt",
    doc="Default system prompt.",
    command="system",
    label="System prompt",
    option="prompt",
    hint="The system prompt (omit and set clear to remove it)",
    max_chars=MAX_SYSTEM_PROMPT_CHARS,
)
MAX_COMPLETION_TOKENS = Param(
    name="max_completion_tokens",
    kind=Kind.WHOLE,
    doc="Default output budget (answer + reasoning).",
    command="params",
    label="max tokens",
    option="max_tokens",
    hint="Output budget incl. reasoning",
    bounds=(1, 131072),
    model_default=MODEL_DEFAULT_MAX_TOKENS,
)
TEMPERATURE = Param(
    name="temperature",
    kind=Kind.NUMBER,
    doc="Default temperature.",
    command="params",
    hint="Randomness",
    bounds=(0.0, 2.0),
    model_default=1.0,
)
TOP_P = Param(
    name="top_p",
    kind=Kind.NUMBER,
    doc="Default top_p.",
    command="params",
    hint="Nucleus sampling",
    bounds=(0.0, 1.0),
    model_default=0.7,
)

MAX_PERSONA_NAME_CHARS = 32
# A bundle of the settings above that the operator defines (``[personas.<name>]``): its
# values are defaults at the scope it is set at (bot.domain.personas); itself never sent.
PERSONA = Param(
    name="persona",
    wire_key=None,
    kind=Kind.TEXT,
    shown="the persona",
    doc="Default persona: the name of one of the [personas.<name>] sections.",
    label="Persona",
    option="name",
    hint="One of the personas this bot offers",
    max_chars=MAX_PERSONA_NAME_CHARS,
)

# The bot's own setting (never sent to the model): whether it answers every message of a
# channel, and how. A thread is a conversation already, so it is set per channel or server.
AUTOREPLY = Param(
    name="autoreply",
    wire_key=None,
    kind=Kind.CHOICE,
    doc="Default autoreply mode: off (mentions only), threads or inline.",
    command_doc="Set whether the bot answers every message in this channel",
    label="Autoreply",
    option="mode",
    hint="off (mentions only), threads (a thread per message) or inline (replies here)",
    choices=AUTOREPLY_MODES,
    model_default="off",
    scopes=frozenset({SettingsScope.CHANNEL, SettingsScope.SERVER}),
)

#: Every parameter, in the order ``/settings`` and the config list them.
PARAMS: tuple[Param, ...] = (
    THINKING,
    EFFORT,
    SYSTEM_PROMPT,
    MAX_COMPLETION_TOKENS,
    TEMPERATURE,
    TOP_P,
    PERSONA,
    AUTOREPLY,
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
#: The numbers people tune together with ``/params``.
TUNING: tuple[Param, ...] = tuple(p for p in PARAMS if p.command == "params")
