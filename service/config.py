"""Configuration: one typed, frozen settings object, read from the environment once at start-up.

Checked here with the standard library, not pydantic: the variables are flat (text, numbers,
switches, comma-separated lists, one JSON map), and pydantic's first model cost every new instance
0.18 s before its first answer (README, "Cold start and memory"). pydantic stays where it earns
that cost: the end-of-call payload models, loaded on the first end-of-call. Every bad variable is
named in one ConfigurationError; a secret's value is never quoted.
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import json
import math
import os
import re
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigurationError(RuntimeError):
    """Raised at start-up when an environment variable is missing or invalid."""


class Secret:
    """A setting's secret value: shown as stars in repr, str and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Rule:
    """What a setting accepts besides its type."""

    pattern: str | None = None  # text must match (the patterns are anchored)
    upper: bool = False  # text is upper-cased before the other checks
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    check: Callable[[Any], None] | None = None  # raises ValueError naming what is wrong


def setting(default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A field with a default value and its rule."""
    return field(default=default, metadata={"rule": Rule(**rule)})


NO_RULE = {"rule": Rule()}


def _check_standard_webhooks_secrets(secrets: list[Secret]) -> None:
    # Standard Webhooks secrets are `whsec_` + base64; a typo must stop the start-up with the
    # variable named, not with a traceback (the secret itself is never echoed).
    for secret in secrets:
        text = secret.get_secret_value().removeprefix("whsec_")
        try:
            if not b64decode(text, validate=True):
                raise ValueError
        except (binascii.Error, ValueError):
            raise ValueError("each secret must be whsec_ followed by base64") from None


_NAME = r"^[A-Za-z0-9_\-]{1,100}$"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. The environment variable is the field name in upper case
    (any case is accepted); Settings.from_environment() reads them. Built from Python values too
    (tests), converted and checked the same way."""

    # Google Cloud
    google_cloud_project: str = setting(pattern=r"^[a-z][a-z0-9\-:.]{3,62}$")
    firestore_database: str = setting("(default)", pattern=r"^.+$")
    profiles_collection: str = setting("profiles", pattern=_NAME)
    agents_collection: str = setting("agents", pattern=_NAME)
    dead_letter_collection: str = setting("dead_letters", pattern=_NAME)
    bigquery_dataset: str = setting("millis", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    bigquery_events_table: str = setting("call_events", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    bigquery_location: str = setting("US")

    # Authentication (see service/web/auth.py)
    webhook_tokens: list[Secret] = field(default_factory=list, metadata=NO_RULE)
    webhook_token_header: str = setting("X-Webhook-Token", pattern=r"^[A-Za-z0-9\-]{1,64}$")
    webhook_signing_secrets: list[Secret] = field(
        default_factory=list, metadata={"rule": Rule(check=_check_standard_webhooks_secrets)}
    )
    allow_unauthenticated: bool = setting(False)

    # Prefetch
    prefetch_deadline_ms: int = setting(500, ge=10, le=10_000)
    prefetch_response_format: Literal["current", "original"] = setting(
        "current", choices=("current", "original")
    )
    prefetch_lookup_key: str = setting("", pattern=r"^[A-Za-z0-9_\-]{0,64}$")
    # Whether `from`/`to` identify callers for agents without their own `caller_numbers`
    # (service/prefetch/identity.py): off by default, since a web caller can send any `from`.
    prefetch_caller_numbers: Literal["phone", "signed", "off"] = setting(
        "off", choices=("phone", "signed", "off")
    )
    default_phone_region: str = setting("US", pattern=r"^[A-Z]{2}$")
    profile_cache_ttl_seconds: float = setting(30.0, ge=0, le=3600)
    agent_cache_ttl_seconds: float = setting(60.0, ge=0, le=3600)
    profile_cache_stale_seconds: float = setting(600.0, ge=0, le=86_400)
    profile_cache_max_entries: int = setting(20_000, ge=0, le=1_000_000)
    # Reads in flight at once per instance; more requests share the next read (coalescer.py).
    prefetch_max_concurrent_reads: int = setting(1, ge=1, le=64)
    # JSON: {"agent_id": "secret"} or {"agent_id": ["new", "old"]} during a rotation. Those
    # agents' lookup-key values count only when signed (`<key>_sig`, see
    # service/prefetch/answer.py).
    lookup_signing_secrets: dict[str, list[Secret]] = field(default_factory=dict, metadata=NO_RULE)

    # End of call
    # Both budgets together are the longest an end-of-call can take: by default 9 s, inside the
    # 10 s Cloud Run gives between SIGTERM and SIGKILL, so a scale-in never cuts a call's storage.
    bigquery_insert_timeout_seconds: float = setting(6.0, gt=0, le=50)
    bigquery_insert_attempts: int = setting(3, ge=1, le=10)
    dead_letter_timeout_seconds: float = setting(3.0, gt=0, le=50)
    # After this many failed inserts in a row, or while one insert has waited longer than
    # BIGQUERY_BREAKER_SLOW_SECONDS, calls go straight to the dead-letter store; one insert every
    # BIGQUERY_BREAKER_PROBE_SECONDS tries BigQuery again (stores/breaker.py).
    bigquery_breaker_failures: int = setting(3, ge=1, le=1000)
    bigquery_breaker_probe_seconds: float = setting(5.0, gt=0, le=600)
    bigquery_breaker_slow_seconds: float = setting(2.0, gt=0, le=50)
    # Caller memory (service/memory): the most an end-of-call waits for its memory update, after
    # the row is stored and within the two budgets above (a slower update finishes unwaited for
    # or is caught up by the replay job); and how long memory is kept after a caller's last call
    # (the Firestore TTL policy deletes it: Terraform memory_retention_days).
    memory_timeout_seconds: float = setting(0.5, gt=0, le=10)
    memory_retention_days: int = setting(365, ge=1, le=3650)
    # allowlist: only the parts of the configuration people query (prompt, voice, model, tool
    # definitions), by path (service/end_of_call/redaction/allowlist.py), kept text through the
    # detectors; redacted: every field, secrets removed by detection alone; none: not stored.
    store_agent_config: Literal["redacted", "allowlist", "none"] = setting(
        "allowlist", choices=("redacted", "allowlist", "none")
    )
    # Allowlist mode: more dotted paths to keep (`flow.voicemail`, `crm_account`), each whole and
    # redacted by every layer.
    agent_config_allowlist: list[str] = field(metadata=NO_RULE, default_factory=list)
    redact_key_patterns: list[str] = field(
        metadata=NO_RULE,
        default_factory=lambda: [
            "token",
            "secret",
            "secrets",
            "key",
            "password",
            "passwords",
            "passwd",
            "passphrase",
            "authorization",
            "auth",
            "credential",
            "credentials",
            "cookie",
            "signature",
            "bearer",
            "pass",
            "pwd",
            "pin",
            "passcode",
            "sig",
            "jwt",
            "apikey",
        ],
    )

    # Request limits
    # 3 MiB of any text still fits BigQuery's 10 MB row as its client sends it (a character outside
    # the BMP costs 4 bytes here and 12 there); every row's exact size is checked besides.
    max_body_bytes: int = setting(3 * 1024 * 1024, ge=1024, le=10_000_000)
    max_query_params: int = setting(100, ge=4, le=1000)
    max_query_value_chars: int = setting(1024, ge=16, le=65_536)
    # The whole body must arrive within this time (a client dripping bytes frees its thread).
    request_read_timeout_seconds: float = setting(10.0, gt=0, le=60)
    # End-of-calls served at once by an instance; beyond, 503 + Retry-After at once. Below THREADS,
    # so that a slow store behind the end-of-call never leaves the prefetch without a thread.
    end_of_call_max_in_flight: int = setting(20, ge=1, le=1000)

    # Operations
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        "INFO", upper=True, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    trace_exporter: Literal["auto", "gcp", "console", "none"] = setting(
        "auto", choices=("auto", "gcp", "console", "none")
    )
    k_service: str = setting("")  # set by Cloud Run; tells us we are deployed

    # BigQuery write API (service/stores/bigquery.py, service/stores/storage_write.py):
    # storage_write appends to the table's default stream of the Storage Write API (at-least-once,
    # half the price per GB, a free tier, faster here: README, "BigQuery write API"); insert_all is
    # the legacy tabledata.insertAll (insertId de-duplication, best effort).
    bigquery_write_api: Literal["insert_all", "storage_write"] = setting(
        "storage_write", choices=("insert_all", "storage_write")
    )

    def __post_init__(self) -> None:
        problems = []
        for spec in dataclasses.fields(self):
            try:
                value = _check(
                    _convert(str(spec.type), getattr(self, spec.name)), spec.metadata["rule"]
                )
            except ValueError as exc:
                problems.append(f"{spec.name.upper()}: {exc}")
            else:
                object.__setattr__(self, spec.name, value)
        if not problems:
            # Cloud Run's request timeout is 60 s (Terraform); leave time for reading the body.
            total = self.bigquery_insert_timeout_seconds + self.dead_letter_timeout_seconds
            if total > 50:
                budgets = "BIGQUERY_INSERT_TIMEOUT_SECONDS + DEAD_LETTER_TIMEOUT_SECONDS"
                problems.append(f"{budgets} must be at most 50")
        if problems:
            raise ConfigurationError("invalid configuration: " + "; ".join(problems))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings named in `environ` (default: the process environment), case-insensitive
        like the shell variables users set; unknown variables are ignored."""
        by_name = {name.lower(): value for name, value in (environ or os.environ).items()}
        names = [spec.name for spec in dataclasses.fields(cls)]
        if "google_cloud_project" not in by_name:
            raise ConfigurationError("invalid configuration: GOOGLE_CLOUD_PROJECT: required")
        values: dict[str, Any] = {name: by_name[name] for name in names if name in by_name}
        return cls(**values)

    @property
    def on_cloud_run(self) -> bool:
        return bool(self.k_service)

    @property
    def events_table_id(self) -> str:
        return f"{self.google_cloud_project}.{self.bigquery_dataset}.{self.bigquery_events_table}"


def _convert(kind: str, value: Any) -> Any:
    converter = _CONVERTERS.get(kind) or (_text if kind.startswith("Literal") else None)
    if converter is None:
        raise TypeError(f"no converter for {kind}")
    return converter(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("must be a whole number") from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false")


def _words(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValueError("must be a comma-separated list")
    return [item.strip() for item in items if item.strip()]


def _secrets(value: Any) -> list[Secret]:
    if isinstance(value, list | tuple) and all(isinstance(item, Secret) for item in value):
        return list(value)
    return [Secret(item) for item in _words(value)]


def _secret_map(value: Any) -> dict[str, list[Secret]]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            # The message must not quote the value: it holds secrets.
            raise ValueError('must be JSON: {"agent-id": "secret"}') from None
    if not isinstance(value, dict):
        raise ValueError('must be JSON: {"agent-id": "secret"}')
    secrets: dict[str, list[Secret]] = {}
    for agent, entry in value.items():
        items = [entry] if isinstance(entry, str | Secret) else entry
        if not isinstance(items, list) or not all(isinstance(i, str | Secret) for i in items):
            raise ValueError("each agent needs a secret or a list of secrets")
        secrets[str(agent)] = [i if isinstance(i, Secret) else Secret(i) for i in items]
        if any(not secret.get_secret_value() for secret in secrets[str(agent)]):
            raise ValueError("a signing secret is empty")
    return secrets


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _text,
    "int": _integer,
    "float": _number,
    "bool": _switch,
    "list[str]": _words,
    "list[Secret]": _secrets,
    "dict[str, list[Secret]]": _secret_map,
}


def _check(value: Any, rule: Rule) -> Any:
    """`value` as the rule makes it (upper-cased where asked), or ValueError."""
    if rule.upper:
        value = value.upper()
    # fullmatch: a trailing newline (a pasted value) is not accepted the way `$` alone would
    if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
        raise ValueError(f"must match {rule.pattern}")
    if rule.choices and value not in rule.choices:
        raise ValueError(f"must be one of {', '.join(rule.choices)}")
    if rule.ge is not None and value < rule.ge:
        raise ValueError(f"must be at least {rule.ge:g}")
    if rule.gt is not None and value <= rule.gt:
        raise ValueError(f"must be more than {rule.gt:g}")
    if rule.le is not None and value > rule.le:
        raise ValueError(f"must be at most {rule.le:g}")
    if rule.check is not None:
        rule.check(value)
    return value


def load_settings() -> Settings:
    """Read the environment; raise ConfigurationError naming each bad variable."""
    return Settings.from_environment()


@functools.cache
def get_settings() -> Settings:
    return load_settings()
