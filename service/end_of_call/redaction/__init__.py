"""Redaction of secrets from what is stored: the agent configuration Millis sends with each call
(system prompt, tool definitions, URLs, headers carrying API keys) and any payload field no column
models. Layered, each layer in its own module:

1. key rules (`keys.py`): a value under a secret-sounding name (`api_keys`, `accessTokens`, `pwd`);
2. structure rules (`structure.py`): header collections and name/value pairs under any key;
3. value detectors (`values.py`): known token formats from detect-secrets' plugins, JWTs,
   authorization schemes, connection strings, standalone high-entropy strings;
4. URL rules (`urls.py`): user-info, query, fragment and path tokens of URLs anywhere in text.

`redact` is idempotent and never mutates its input. With an allow-list
(STORE_AGENT_CONFIG=allowlist), `agent_config` first keeps only keys known to be safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from service.end_of_call.redaction.keys import KeyRules
from service.end_of_call.redaction.structure import is_header_collection, pair_fields
from service.end_of_call.redaction.urls import redact_urls
from service.end_of_call.redaction.values import (
    REDACTED,
    is_standalone_secret,
    redact_known_formats,
)

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["REDACTED", "Redactor"]


class Redactor:
    def __init__(
        self, sensitive_words: Iterable[str], *, allowlist: Iterable[str] | None = None
    ) -> None:
        self.keys = KeyRules(sensitive_words)
        self.allowlist = None if allowlist is None else frozenset(k.lower() for k in allowlist)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        allowlist = (
            settings.agent_config_allowlist if settings.store_agent_config == "allowlist" else None
        )
        return cls(settings.redact_key_patterns, allowlist=allowlist)

    def is_sensitive_key(self, key: str) -> bool:
        return self.keys.is_sensitive(key)

    def agent_config(self, config: dict[str, Any] | None) -> dict[str, Any] | None:
        """The configuration as stored: allow-listed keys only (in allowlist mode), redacted."""
        if config is None:
            return None
        if self.allowlist is not None:
            config = self._allowed(config)
        redacted: dict[str, Any] = self.redact(config)
        return redacted

    def _allowed(self, value: dict[str, Any]) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).lower() in (self.allowlist or ()):
                kept[key] = self._allowed(item) if isinstance(item, dict) else item
        return kept

    def redact(self, value: Any, key: str = "") -> Any:
        """A copy of `value` with secrets replaced by "[REDACTED]"."""
        if key and self.keys.is_sensitive(key):
            return self._secret_value(value, key)
        if isinstance(value, dict):
            return self._redact_mapping(value)
        if isinstance(value, list):
            if is_header_collection(key):
                return [self._redact_header(item) for item in value]
            return [self.redact(item, key) for item in value]
        if isinstance(value, str):
            return self.redact_text(value)
        return value

    def _redact_mapping(self, value: dict[str, Any]) -> dict[str, Any]:
        pair = pair_fields(value)
        if pair is not None:
            name_field, value_field = pair
            if self.keys.is_sensitive(value[name_field]) and value[value_field] not in (None, ""):
                return {**self._each(value, skip=value_field), value_field: REDACTED}
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if is_header_collection(name) and isinstance(item, dict):
                result[key] = {header: self._header_value(v) for header, v in item.items()}
            else:
                result[key] = self.redact(item, name)
        return result

    def _each(self, value: dict[str, Any], skip: str) -> dict[str, Any]:
        return {k: v if k == skip else self.redact(v, str(k)) for k, v in value.items()}

    def _redact_header(self, item: Any) -> Any:
        if isinstance(item, dict):
            pair = pair_fields(item)
            if pair is not None:  # keep the header's name, hide its value
                return {
                    **self._each(item, skip=pair[1]),
                    pair[1]: self._header_value(item[pair[1]]),
                }
            return {k: self._header_value(v) for k, v in item.items()}
        return self._header_value(item)

    def _header_value(self, value: Any) -> Any:
        if value in (None, "", REDACTED):
            return value
        if isinstance(value, dict | list):
            return self._all_values(value)
        return REDACTED

    def _secret_value(self, value: Any, key: str) -> Any:
        if value in (None, "", [], {}) or value == REDACTED:
            return value
        if isinstance(value, bool) or (
            isinstance(value, int | float) and not self.keys.numbers_are_secret(key)
        ):
            return value  # `max_tokens: 300`, `use_api_key: true`: settings, not secrets
        if isinstance(value, dict | list):
            return self._all_values(value)
        return REDACTED

    def _all_values(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self._all_values(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._all_values(item) for item in value]
        return value if value in (None, "", REDACTED) else REDACTED

    def redact_text(self, text: str) -> str:
        if text != REDACTED and is_standalone_secret(text.strip()):
            return REDACTED
        text = redact_urls(text, self.keys.is_sensitive)
        return redact_known_formats(text)
