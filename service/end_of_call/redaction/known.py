"""Known secrets: the values the redactor removed from a call's agent configuration, removed from
every other column of the same row too.

A tool's API key often reappears elsewhere in the call: in a tool message's content or extra
fields, in `error_message` ("401 for key sk-..."), in `function_calls`, in metadata. Detection
may not recognise it there, but the service knows the value: it redacted it from the
configuration. Those values (and the forms they take when sent on: percent-encoded, JSON-escaped,
the credential of `Bearer <credential>`) are replaced wherever they occur.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from service.end_of_call.redaction.values import REDACTED

# Shorter values are too likely to be ordinary words or numbers of a transcript ("acme", "1234").
MIN_KNOWN_CHARS = 6
# A configuration lists a few dozen credentials at most; the bound keeps the cost of a hostile one
# (every string of the row is searched for each value) within a few hundred milliseconds.
MAX_KNOWN_VALUES = 256
# Header values that describe the request, never authorise it.
_DESCRIPTIVE = frozenset({"application/json", "text/plain", "application/x-www-form-urlencoded"})


def removed_values(original: Any, redacted: Any) -> set[str]:
    """What redaction took out of `original` to give `redacted` (the same shape, secrets replaced
    by REDACTED, whole or inside text)."""
    found: set[str] = set()
    stack = [(original, redacted)]
    while stack:
        before, after = stack.pop()
        if isinstance(before, dict) and isinstance(after, dict):
            stack.extend((child, after[key]) for key, child in before.items() if key in after)
        elif isinstance(before, list) and isinstance(after, list):
            stack.extend(zip(before, after, strict=False))
        elif after == REDACTED and before != REDACTED and before is not None:
            found.add(before if isinstance(before, str) else json.dumps(before))
        elif isinstance(before, str) and isinstance(after, str) and before != after:
            found.update(_gaps(before, after))
    return found


def _gaps(before: str, after: str) -> list[str]:
    """The parts of `before` replaced by REDACTED in `after`: the kept pieces are in order, the
    first a prefix and the last a suffix."""
    pieces = after.split(REDACTED)
    if not before.startswith(pieces[0]) or not before.endswith(pieces[-1]):
        return []
    gaps: list[str] = []
    position = len(pieces[0])
    end = len(before) - len(pieces[-1])
    for piece in pieces[1:-1]:
        found = before.find(piece, position, end) if piece else position
        if found < 0:
            return gaps
        gaps.append(before[position:found])
        position = found + len(piece)
    gaps.append(before[position:end])
    return [gap for gap in gaps if gap]


class KnownSecrets:
    """The values to remove from a row, and their variants, longest first."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in values:
            secret = secret.strip()
            if secret.lower() in _DESCRIPTIVE:
                continue
            forms.add(secret)
            # "Bearer abc...": the credential alone is sent on too.
            forms.update(part for part in secret.split() if part != secret)
            forms.add(quote(secret, safe=""))
            forms.add(json.dumps(secret)[1:-1])
        usable = (form for form in forms if len(form) >= MIN_KNOWN_CHARS and REDACTED not in form)
        self.values = sorted(usable, key=len, reverse=True)[:MAX_KNOWN_VALUES]

    def __bool__(self) -> bool:
        return bool(self.values)

    def scrub_text(self, text: str) -> str:
        for secret in self.values:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub(self, value: Any) -> Any:
        """A copy of a JSON value (keys included) with every known secret replaced. Iterative:
        the value is the caller's."""
        if not self.values:
            return value
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while stack:
            item, parent, slot = stack.pop()
            if isinstance(item, str):
                item = self.scrub_text(item)
            elif isinstance(item, dict):
                copy: dict[str, Any] = {}
                for key, child in item.items():
                    clean_key = self.scrub_text(key) if isinstance(key, str) else key
                    copy[clean_key] = None
                    stack.append((child, copy, clean_key))
                item = copy
            elif isinstance(item, list):
                items: list[Any] = [None] * len(item)
                stack.extend((child, items, index) for index, child in enumerate(item))
                item = items
            parent[slot] = item
        return root[0]
