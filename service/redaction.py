"""Redaction of secrets from agent configurations before they are stored.

Millis sends the whole agent configuration with each call: system prompt, tool definitions, tool
URLs and tool headers carrying API keys. Rules:
- every value under a key named `headers` is replaced (header names are kept);
- a value whose key, split into words (snake_case, kebab-case, camelCase), contains a configured
  word (token, secret, key, password, ...) is replaced;
- secrets in URLs (user:password@ and query parameters named like the words above) are replaced;
- `Bearer ...` / `Basic ...` credentials anywhere in text are replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_HEADER_KEYS = frozenset({"headers", "header"})


class Redactor:
    def __init__(self, sensitive_words: Iterable[str]) -> None:
        self.words = frozenset(word.lower() for word in sensitive_words if word)

    def is_sensitive_key(self, key: str) -> bool:
        words = [word.lower() for word in _WORD_BOUNDARY.split(key) if word]
        joined = "".join(words)
        # "x-api-key" -> x, api, key; "apikey" -> apikey (ends with "key"); "keywords" is kept.
        return any(word in self.words for word in words) or any(
            joined.endswith(word) and len(word) >= 3 for word in self.words
        )

    def redact(self, value: Any) -> Any:
        """A copy of `value` with secrets replaced by "[REDACTED]"."""
        if isinstance(value, dict):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if str(key).lower() in _HEADER_KEYS:
                    result[key] = self._redact_all_values(item)
                elif self.is_sensitive_key(str(key)) and item not in (None, "", [], {}):
                    result[key] = (
                        self._redact_all_values(item) if isinstance(item, dict | list) else REDACTED
                    )
                else:
                    result[key] = self.redact(item)
            return result
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        if isinstance(value, str):
            return self.redact_text(value)
        return value

    def _redact_all_values(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self._redact_all_values(item) for key, item in value.items()}
        if isinstance(value, list):
            # A list of {"name": ..., "value": ...} header pairs: keep the names.
            return [self._redact_all_values(item) for item in value]
        return REDACTED

    def redact_text(self, text: str) -> str:
        if _URL.match(text):
            text = self._redact_url(text)
        return _AUTH_SCHEME.sub(lambda match: f"{match.group(1)} {REDACTED}", text)

    def _redact_url(self, url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        netloc = parts.netloc
        if "@" in netloc:
            credentials, host = netloc.rsplit("@", 1)
            user = credentials.split(":", 1)[0]
            netloc = f"{user}:{REDACTED}@{host}" if ":" in credentials else f"{REDACTED}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(key, REDACTED if self.is_sensitive_key(key) else val) for key, val in pairs],
                safe="[]",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
