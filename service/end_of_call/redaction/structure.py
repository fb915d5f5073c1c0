"""Structure rules: secrets recognisable by the shape around them, not by their own key.

Header lists come as name/value pairs under any key (`{"request_headers": [{"name":
"Authorization", "value": "..."}]}`, `{"key": ..., "value": ...}`, `{"header": ..., "value":
...}`): the value is secret when the pair's name is, and every value of a header collection is
(a custom header is as likely a credential as not)."""

from __future__ import annotations

from typing import Any

NAME_FIELDS = ("name", "key", "header", "field", "param")
VALUE_FIELDS = ("value", "val", "content")


def pair_fields(item: dict[str, Any]) -> tuple[str, str] | None:
    """The (name field, value field) of a name/value pair, or None when `item` is not one."""
    names = [field for field in NAME_FIELDS if isinstance(item.get(field), str)]
    values = [field for field in VALUE_FIELDS if field in item]
    if names and values:
        return names[0], values[0]
    return None


def is_header_collection(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return lowered in ("headers", "header") or lowered.endswith(("_headers", "headers"))
