"""Configuration: one typed settings object, read from the environment once at start-up.

A pydantic model filled from the environment here rather than pydantic-settings' BaseSettings:
the variables are flat (lists are comma-separated, the one map is JSON), and pydantic-settings'
import (every cloud secret-store provider) cost a new instance 0.17 s and 6 MB."""

from __future__ import annotations

import binascii
import functools
import json
import os
from base64 import b64decode
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigurationError(RuntimeError):
    """Raised at start-up when an environment variable is missing or invalid."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseModel):
    """Every setting of the service. The environment variable is the field name in upper case
    (any case is accepted); Settings.from_environment() reads them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Google Cloud
    google_cloud_project: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9\-:.]{3,62}$")
    firestore_database: str = Field("(default)", min_length=1)
    profiles_collection: str = Field("profiles", pattern=r"^[A-Za-z0-9_\-]{1,100}$")
    agents_collection: str = Field("agents", pattern=r"^[A-Za-z0-9_\-]{1,100}$")
    dead_letter_collection: str = Field("dead_letters", pattern=r"^[A-Za-z0-9_\-]{1,100}$")
    bigquery_dataset: str = Field("millis", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    bigquery_events_table: str = Field("call_events", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    bigquery_location: str = "US"

    # Authentication (see service/auth.py)
    webhook_tokens: list[SecretStr] = Field(default_factory=list)
    webhook_token_header: str = Field("X-Webhook-Token", pattern=r"^[A-Za-z0-9\-]{1,64}$")
    webhook_signing_secrets: list[SecretStr] = Field(default_factory=list)
    allow_unauthenticated: bool = False

    # Prefetch
    prefetch_deadline_ms: int = Field(500, ge=10, le=10_000)
    prefetch_response_format: Literal["current", "original"] = "current"
    prefetch_lookup_key: str = Field("", pattern=r"^[A-Za-z0-9_\-]{0,64}$")
    default_phone_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    profile_cache_ttl_seconds: float = Field(30.0, ge=0, le=3600)
    agent_cache_ttl_seconds: float = Field(60.0, ge=0, le=3600)
    profile_cache_stale_seconds: float = Field(600.0, ge=0, le=86_400)
    profile_cache_max_entries: int = Field(20_000, ge=0, le=1_000_000)
    # Reads in flight at once per instance; more requests share the next read (coalescer.py).
    prefetch_max_concurrent_reads: int = Field(1, ge=1, le=64)
    # JSON: {"agent_id": "secret"} or {"agent_id": ["new", "old"]} during a rotation. Those
    # agents' lookup-key values count only when signed (`<key>_sig`, see service/prefetch.py).
    lookup_signing_secrets: dict[str, list[SecretStr]] = Field(default_factory=dict)

    # End of call
    # Both budgets together are the longest an end-of-call can take: by default 9 s, inside the
    # 10 s Cloud Run gives between SIGTERM and SIGKILL, so a scale-in never cuts a call's storage.
    bigquery_insert_timeout_seconds: float = Field(6.0, gt=0, le=50)
    bigquery_insert_attempts: int = Field(3, ge=1, le=10)
    dead_letter_timeout_seconds: float = Field(3.0, gt=0, le=50)
    # redacted: every field, secrets removed (service/redaction); allowlist: only the keys in
    # AGENT_CONFIG_ALLOWLIST (at any depth), then redacted too; none: not stored.
    store_agent_config: Literal["redacted", "allowlist", "none"] = "redacted"
    agent_config_allowlist: list[str] = Field(
        default_factory=lambda: [
            "name",
            "language",
            "prompt",
            "first_message",
            "voice",
            "voice_id",
            "model",
            "llm",
            "tts",
            "stt",
            "provider",
            "temperature",
            "max_tokens",
            "tools",
            "description",
            "type",
        ]
    )
    redact_key_patterns: list[str] = Field(
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
        ]
    )

    # Request limits
    # 3 MiB of any text still fits BigQuery's 10 MB row as its client sends it (a character outside
    # the BMP costs 4 bytes here and 12 there); every row's exact size is checked besides.
    max_body_bytes: int = Field(3 * 1024 * 1024, ge=1024, le=10_000_000)
    max_query_params: int = Field(100, ge=4, le=1000)
    max_query_value_chars: int = Field(1024, ge=16, le=65_536)
    # The whole body must arrive within this time (a client dripping bytes frees its thread).
    request_read_timeout_seconds: float = Field(10.0, gt=0, le=60)

    # Operations
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    trace_exporter: Literal["auto", "gcp", "console", "none"] = "auto"
    k_service: str = ""  # set by Cloud Run; tells us we are deployed

    # BigQuery write API (service/sink.py, service/storage_write_sink.py): storage_write appends to
    # the table's default stream of the Storage Write API (at-least-once, half the price per GB, a
    # free tier, faster here: README, "BigQuery write API"); insert_all is the legacy
    # tabledata.insertAll (insertId de-duplication, best effort).
    bigquery_write_api: Literal["insert_all", "storage_write"] = "storage_write"

    @field_validator(
        "webhook_tokens",
        "webhook_signing_secrets",
        "redact_key_patterns",
        "agent_config_allowlist",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_list(value)

    @model_validator(mode="after")
    def _end_of_call_fits_the_request_timeout(self) -> Settings:
        # Cloud Run's request timeout is 60 s (Terraform); leave time for reading the body.
        total = self.bigquery_insert_timeout_seconds + self.dead_letter_timeout_seconds
        if total > 50:
            raise ValueError(
                "BIGQUERY_INSERT_TIMEOUT_SECONDS + DEAD_LETTER_TIMEOUT_SECONDS must be at most 50"
            )
        return self

    @field_validator("webhook_signing_secrets")
    @classmethod
    def _signing_secrets_are_base64(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        # Standard Webhooks secrets are `whsec_` + base64; a typo must stop the start-up with the
        # variable named, not with a traceback (the secret itself is never echoed).
        for secret in secrets:
            text = secret.get_secret_value().removeprefix("whsec_")
            try:
                if not b64decode(text, validate=True):
                    raise ValueError
            except (binascii.Error, ValueError):
                raise ValueError("each secret must be whsec_ followed by base64") from None
        return secrets

    @field_validator("lookup_signing_secrets", mode="before")
    @classmethod
    def _one_or_more_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                # The message must not quote the value: it holds secrets.
                raise ValueError('must be JSON: {"agent-id": "secret"}') from None
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("lookup_signing_secrets")
    @classmethod
    def _secrets_not_empty(cls, value: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        if any(not s.get_secret_value() for secrets in value.values() for s in secrets):
            raise ValueError("a signing secret is empty")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings named in `environ` (default: the process environment), case-insensitive
        like the shell variables users set; unknown variables are ignored."""
        by_name = {name.lower(): value for name, value in (environ or os.environ).items()}
        return cls.model_validate(
            {name: by_name[name] for name in cls.model_fields if name in by_name}
        )

    @property
    def on_cloud_run(self) -> bool:
        return bool(self.k_service)

    @property
    def events_table_id(self) -> str:
        return f"{self.google_cloud_project}.{self.bigquery_dataset}.{self.bigquery_events_table}"


def load_settings() -> Settings:
    """Read the environment; raise ConfigurationError naming each bad variable."""
    try:
        return Settings.from_environment()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = str(error["loc"][0]).upper() if error["loc"] else "?"
            problems.append(f"{variable}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
