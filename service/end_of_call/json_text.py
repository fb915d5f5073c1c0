"""JSON carried as text inside a payload (`chat` in the current Millis format, any structured field
sent as a string), parsed with the same bound as the body.

The body's depth is checked before it is parsed (the parser recurses); text inside it is opaque to
that check, so each such text is checked the same way before it is parsed here. Nothing else may
call `json.loads` on caller-supplied text.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# The body's bound (service/http_guard.py): Millis nests a few levels; BigQuery's JSON type holds
# at most 500, and the redactor and pydantic walk values recursively.
MAX_DEPTH = 32

# A string, or an unclosed one up to the end: possessive, so text an attacker shapes (`"\\`
# repeated) is scanned once, never retried from each quote.
_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonTextError(ValueError):
    """Text that is not usable JSON; the message says why, never what the text holds."""


def depth_of(text: str) -> int:
    """The deepest bracket nesting of JSON text, counted outside strings, without parsing."""
    brackets = _BRACKET.findall(_STRING.sub("", text))
    steps = (1 if bracket in "[{" else -1 for bracket in brackets)
    return max(accumulate(steps, initial=0))


def loads_bounded(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text nested at most `max_depth` levels. `NaN`, `Infinity` and numbers too large
    for a float parse as floats that are not finite: callers repair them (stored_row.repair_json)
    and record the repair, as for the body."""
    if depth_of(text) > max_depth:
        raise JsonTextError(f"JSON text nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise JsonTextError("text, but not valid JSON") from None
