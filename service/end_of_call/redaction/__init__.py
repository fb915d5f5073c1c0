"""Redaction of secrets from what is stored: the agent configuration Millis sends with each call
(system prompt, tool definitions, URLs, headers carrying API keys) and any payload field no column
models. Layered, each layer in its own module:

1. key rules (`keys.py`): a value under a secret-sounding name (`api_keys`, `accessTokens`, `pwd`);
2. structure rules (`structure.py`): header collections and name/value pairs under any key;
3. value detectors (`values.py`): known token formats from detect-secrets' plugins, JWTs,
   authorization schemes, connection strings, standalone high-entropy strings;
4. URL rules (`urls.py`): user-info, query, fragment and path tokens of URLs anywhere in text;
5. context in text (`values.py`): `password: x`, `SMTP_PASS=x` (YAML, env files, JSON held as
   text), `curl -u user:pass`, random-looking tokens inside prose.

`redact` is idempotent and never mutates its input. By default (STORE_AGENT_CONFIG=allowlist)
the stored configuration is built from the parts people query (`allowlist.py`), its text through
the layers above: detection is the second layer, not the only one. The values redaction finds in
the configuration are removed from every other column of the row too (`known.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from service.end_of_call.redaction.allowlist import keep_allowed
from service.end_of_call.redaction.keys import KeyRules
from service.end_of_call.redaction.known import KnownSecrets, removed_values
from service.end_of_call.redaction.structure import is_header_collection, pair_fields
from service.end_of_call.redaction.urls import redact_urls
from service.end_of_call.redaction.values import (
    REDACTED,
    is_standalone_secret,
    redact_in_text,
    redact_known_formats,
)

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["REDACTED", "KnownSecrets", "Redactor"]


class Redactor:
    def __init__(
        self,
        sensitive_words: Iterable[str],
        *,
        allowlist: bool = False,
        extra_paths: Iterable[str] = (),
    ) -> None:
        self.keys = KeyRules(sensitive_words)
        self.allowlist = allowlist
        self.extra_paths = tuple(extra_paths)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(
            settings.redact_key_patterns,
            allowlist=settings.store_agent_config == "allowlist",
            extra_paths=settings.agent_config_allowlist,
        )

    def is_sensitive_key(self, key: str) -> bool:
        return self.keys.is_sensitive(key)

    def agent_config(self, config: dict[str, Any] | None) -> dict[str, Any] | None:
        """The configuration as stored (see `agent_config_and_secrets`)."""
        return self.agent_config_and_secrets(config)[0]

    def agent_config_and_secrets(
        self, config: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, KnownSecrets]:
        """The configuration as stored, and the secrets redaction found in it (to be removed from
        the rest of the call). Allowlist mode keeps only the shape of allowlist.py, its text
        through the detectors; otherwise every field is kept, redacted."""
        if config is None:
            return None, KnownSecrets(())
        redacted: dict[str, Any] = self.redact(config)
        secrets = KnownSecrets(removed_values(config, redacted))
        if not self.allowlist:
            return redacted, secrets
        return keep_allowed(config, self.redact_text, self.redact, self.extra_paths), secrets

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
        return redact_in_text(redact_known_formats(text), self.keys)
