"""Discord's REST error responses, and checks of message bodies against Discord's limits.

Error bodies follow Discord's shape: ``{"code": 50035, "errors": {...}, "message": "Invalid
Form Body"}`` with ``errors`` nested along the offending field's path and ``_errors`` lists at
the leaves; other errors are ``{"code": N, "message": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ApiError", "FormErrors", "check_message_body"]

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_FILES = 10
MAX_EMBED_TOTAL = 6000


class ApiError(Exception):
    """Raised by handlers; becomes an HTTP error response with Discord's body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    # Common ones.
    @classmethod
    def unknown_channel(cls) -> ApiError:
        return cls(404, 10003, "Unknown Channel")

    @classmethod
    def unknown_message(cls) -> ApiError:
        return cls(404, 10008, "Unknown Message")

    @classmethod
    def unknown_guild(cls) -> ApiError:
        return cls(404, 10004, "Unknown Guild")

    @classmethod
    def unknown_member(cls) -> ApiError:
        return cls(404, 10007, "Unknown Member")

    @classmethod
    def unknown_user(cls) -> ApiError:
        return cls(404, 10013, "Unknown User")

    @classmethod
    def unknown_interaction(cls) -> ApiError:
        return cls(404, 10062, "Unknown interaction")

    @classmethod
    def unknown_webhook(cls) -> ApiError:
        return cls(404, 10015, "Unknown Webhook")

    @classmethod
    def missing_access(cls) -> ApiError:
        return cls(403, 50001, "Missing Access")

    @classmethod
    def missing_permissions(cls) -> ApiError:
        return cls(403, 50013, "Missing Permissions")

    @classmethod
    def empty_message(cls) -> ApiError:
        return cls(400, 50006, "Cannot send an empty message")


class FormErrors:
    """Collects field errors into Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: Sequence[str | int], code: str, message: str) -> None:
        node = self.errors
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, 50035, "Invalid Form Body", self.errors)


def _max_len(errors: FormErrors, path: Sequence[str | int], value: Any, limit: int) -> int:
    if value is None:
        return 0
    if not isinstance(value, str):
        errors.add(path, "BASE_TYPE_STRING", "Must be a string.")
        return 0
    if len(value) > limit:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    return len(value)


def check_message_body(body: Mapping[str, Any], *, file_count: int) -> None:
    """Discord's validation of a create/edit message body; raises :class:`ApiError`."""
    errors = FormErrors()
    _max_len(errors, ["content"], body.get("content"), MAX_CONTENT)
    embeds = body.get("embeds")
    if embeds is not None:
        if not isinstance(embeds, list):
            errors.add(["embeds"], "BASE_TYPE_ARRAY", "Must be an array.")
        else:
            if len(embeds) > MAX_EMBEDS:
                errors.add(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
            total = 0
            for index, embed in enumerate(embeds):
                total += _check_embed(errors, ["embeds", index], embed)
            if total > MAX_EMBED_TOTAL:
                errors.add(
                    ["embeds"],
                    "MAX_EMBED_SIZE_EXCEEDED",
                    "Embed size exceeds maximum size of 6000",
                )
    if file_count > MAX_FILES:
        errors.add(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    _check_allowed_mentions(errors, body.get("allowed_mentions"))
    _check_components(errors, body.get("components"), body.get("flags"))
    errors.raise_if_any()


def _check_embed(errors: FormErrors, path: list[str | int], embed: Any) -> int:
    if not isinstance(embed, dict):
        errors.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return 0
    total = _max_len(errors, [*path, "title"], embed.get("title"), 256)
    total += _max_len(errors, [*path, "description"], embed.get("description"), 4096)
    footer = embed.get("footer")
    if isinstance(footer, dict):
        total += _max_len(errors, [*path, "footer", "text"], footer.get("text"), 2048)
    author = embed.get("author")
    if isinstance(author, dict):
        total += _max_len(errors, [*path, "author", "name"], author.get("name"), 256)
    fields = embed.get("fields") or []
    if len(fields) > 25:
        errors.add([*path, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for index, item in enumerate(fields):
        fpath: list[str | int] = [*path, "fields", index]
        if not isinstance(item, dict):
            continue
        for key, limit in (("name", 256), ("value", 1024)):
            value = item.get(key)
            if not value:
                errors.add([*fpath, key], "BASE_TYPE_REQUIRED", "This field is required")
            total += _max_len(errors, [*fpath, key], value, limit)
    return total


def _check_allowed_mentions(errors: FormErrors, allowed: Any) -> None:
    if allowed is None:
        return
    if not isinstance(allowed, dict):
        errors.add(["allowed_mentions"], "DICT_TYPE_CONVERT", "Must be an object.")
        return
    parse = allowed.get("parse", [])
    for index, item in enumerate(parse or []):
        if item not in ("users", "roles", "everyone"):
            errors.add(
                ["allowed_mentions", "parse", index],
                "BASE_TYPE_CHOICES",
                f"Value must be one of {{'users', 'roles', 'everyone'}}. Got {item!r}",
            )
    for kind in ("users", "roles"):
        ids = allowed.get(kind) or []
        if kind in (parse or []) and ids:
            errors.add(
                ["allowed_mentions"],
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )
        if len(ids) > 100:
            errors.add(
                ["allowed_mentions", kind],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 100 or fewer in length.",
            )


def _check_components(errors: FormErrors, components: Any, flags: Any) -> None:
    if components is None:
        return
    if not isinstance(components, list):
        errors.add(["components"], "BASE_TYPE_ARRAY", "Must be an array.")
        return
    if isinstance(flags, int) and flags & (1 << 15):
        return  # components v2: layout rules not modelled
    if len(components) > 5:
        errors.add(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    for row_index, row in enumerate(components):
        path: list[str | int] = ["components", row_index]
        if not isinstance(row, dict) or row.get("type") != 1:
            errors.add([*path, "type"], "UNION_TYPE_CHOICES", "Value of field 'type' must be 1.")
            continue
        children = row.get("components") or []
        if not children or len(children) > 5:
            errors.add(
                [*path, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
            )
        for index, child in enumerate(children):
            cpath: list[str | int] = [*path, "components", index]
            if not isinstance(child, dict):
                continue
            custom_id = child.get("custom_id")
            if child.get("type") == 2 and child.get("style") == 5:
                if not child.get("url"):
                    errors.add([*cpath, "url"], "BASE_TYPE_REQUIRED", "This field is required")
            elif child.get("type") == 2 and child.get("style") == 6:
                pass  # premium button: sku_id
            else:
                if not custom_id:
                    errors.add(
                        [*cpath, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required"
                    )
            if custom_id is not None:
                _max_len(errors, [*cpath, "custom_id"], custom_id, 100)
                if custom_id in seen:
                    errors.add(
                        [*cpath, "custom_id"],
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(str(custom_id))
            if child.get("type") == 2:
                _max_len(errors, [*cpath, "label"], child.get("label"), 80)
