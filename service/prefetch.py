"""Prefetch: find the caller's profile, merge it over the agent's defaults, shape the answer.

Lookup order: the profile named by the agent's lookup key (a metadata parameter, e.g. a CRM id),
then the counterpart phone number, then the other number. Query parameters are attacker-controlled:
they are used only as document ids (after validation) and as template values, never as paths.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers

from service.profiles import DocumentKey, ProfileStore

log = logging.getLogger(__name__)

ResponseFormat = Literal["current", "original"]

# Fields with a meaning of their own in profile and agent documents; not returned as data.
PROFILE_SETTINGS = frozenset({"extra_prompt", "agents", "disabled"})
AGENT_SETTINGS = frozenset(
    {
        "extra_prompt",
        "response_format",
        "lookup_key",
        "phone_numbers",
        "allow_metadata_override",
        "disabled",
    }
)
# Parameters Millis itself sends; the rest of the query string is the call's metadata.
CALL_PARAMETERS = frozenset({"agent_id", "session_id", "from", "to"})

# A document id we accept from the outside: no "/", not "." or "..", not "__reserved__".
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SAFE_DOCUMENT_ID = re.compile(r"^(?!\.\.?$)(?!__.*__$)[A-Za-z0-9_.@+:\-]{1,128}$")
_PLACEHOLDER = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3})\}"
)
_MAX_TEMPLATE_VALUE_CHARS = 1000
_MAX_EXTRA_PROMPT_CHARS = 20_000


def normalise_phone(raw: str | None, default_region: str) -> str | None:
    """E.164 form of a phone number, or None when it is not one."""
    if not raw or len(raw) > 64:
        return None
    if _E164.match(raw):
        return raw  # what Millis sends: already E.164, and parsing costs more than the read
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def safe_document_id(value: Any) -> str | None:
    if isinstance(value, str) and _SAFE_DOCUMENT_ID.match(value):
        return value
    return None


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{field}` / `{map.field}` placeholders; unknown placeholders stay as written."""

    def substitute(match: re.Match[str]) -> str:
        value: Any = values
        for part in match.group(1).split("."):
            if not isinstance(value, Mapping) or part not in value:
                return match.group(0)
            value = value[part]
        if value is None:
            return ""
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text[:_MAX_TEMPLATE_VALUE_CHARS]

    return _PLACEHOLDER.sub(substitute, template)[:_MAX_EXTRA_PROMPT_CHARS]


@dataclass(frozen=True)
class PrefetchRequest:
    agent_id: str
    session_id: str
    from_number: str | None
    to_number: str | None
    metadata: dict[str, str]


@dataclass
class PrefetchAnswer:
    body: dict[str, Any]
    profile_found: bool
    cache_hits: int
    degraded: str  # why Firestore could not be read ("" when it was)


class PrefetchService:
    def __init__(
        self,
        store: ProfileStore,
        *,
        deadline_seconds: float,
        default_format: ResponseFormat,
        default_region: str,
        default_lookup_key: str,
    ) -> None:
        self.store = store
        self.deadline_seconds = deadline_seconds
        self.default_format = default_format
        self.default_region = default_region
        self.default_lookup_key = default_lookup_key

    def answer(self, request: PrefetchRequest) -> PrefetchAnswer:
        deadline = time.monotonic() + self.deadline_seconds
        numbers = self._candidate_numbers(request)
        agent_key: DocumentKey = ("agent", request.agent_id)
        agent_id_ok = safe_document_id(request.agent_id) is not None

        # After an agent's first call its document is cached: its lookup key and own numbers are
        # known before the read, which then fetches only the caller's candidate profiles.
        cached_agent = self.store.last_known(agent_key) if agent_id_ok else None
        lookup_id = self._lookup_id(cached_agent, request.metadata)
        own_numbers = self._own_numbers(cached_agent or {})
        keys: list[DocumentKey] = [agent_key] if agent_id_ok else []
        if lookup_id:
            keys.append(("profile", lookup_id))
        keys.extend(("profile", number) for number in numbers if number not in own_numbers)

        result = self.store.read(keys, max(0.0, deadline - time.monotonic()))
        agent = result.documents.get(agent_key) or {}
        late_lookup_id = self._lookup_id(agent, request.metadata)
        if late_lookup_id and late_lookup_id != lookup_id:
            remaining = deadline - time.monotonic()
            if remaining > 0.005:
                extra = self.store.read([("profile", late_lookup_id)], remaining)
                result.documents.update(extra.documents)
                result.failure = result.failure or extra.failure
            lookup_id = late_lookup_id

        if agent.get("disabled") is True:
            agent = {}
        candidates = ([lookup_id] if lookup_id else []) + self._order_numbers(numbers, agent)
        profile = None
        for document_id in candidates:
            document = result.documents.get(("profile", document_id))
            if document and self._usable(document, request.agent_id):
                profile = document
                break

        body = self._shape(agent, profile or {}, request)
        if result.failure:
            log.warning(
                "profile store unavailable; answered from cache or agent defaults",
                extra={"agent_id": request.agent_id, "failure": result.failure},
            )
        return PrefetchAnswer(body, profile is not None, result.from_cache, result.failure)

    def _candidate_numbers(self, request: PrefetchRequest) -> list[str]:
        numbers = []
        for raw in (request.from_number, request.to_number):
            number = normalise_phone(raw, self.default_region)
            if number and number not in numbers:
                numbers.append(number)
        return numbers

    def _lookup_id(
        self, agent: Mapping[str, Any] | None, metadata: Mapping[str, str]
    ) -> str | None:
        key = (agent or {}).get("lookup_key") or self.default_lookup_key
        if not isinstance(key, str) or not key:
            return None
        return safe_document_id(metadata.get(key))

    def _own_numbers(self, agent: Mapping[str, Any]) -> set[str | None]:
        own = agent.get("phone_numbers")
        if not isinstance(own, list):
            return set()
        return {normalise_phone(str(number), self.default_region) for number in own}

    def _order_numbers(self, numbers: list[str], agent: Mapping[str, Any]) -> list[str]:
        """The counterpart: the number that is not one of the agent's own (never looked up)."""
        own_numbers = self._own_numbers(agent)
        return [number for number in numbers if number not in own_numbers]

    @staticmethod
    def _usable(profile: Mapping[str, Any], agent_id: str) -> bool:
        if profile.get("disabled") is True:
            return False
        allowed = profile.get("agents")
        return not isinstance(allowed, list) or agent_id in allowed

    def _shape(
        self, agent: Mapping[str, Any], profile: Mapping[str, Any], request: PrefetchRequest
    ) -> dict[str, Any]:
        fields = {key: value for key, value in agent.items() if key not in AGENT_SETTINGS}
        fields.update((key, value) for key, value in profile.items() if key not in PROFILE_SETTINGS)

        call_values = {"agent_id": request.agent_id, "session_id": request.session_id}
        if agent.get("allow_metadata_override") is True:
            template_values = {**fields, **request.metadata, **call_values}
        else:  # metadata fills gaps only: a caller cannot rewrite what the profile says
            template_values = {**request.metadata, **fields, **call_values}
        prompts = [
            render_template(text, template_values)
            for text in (agent.get("extra_prompt"), profile.get("extra_prompt"))
            if isinstance(text, str) and text.strip()
        ]
        extra_prompt = "\n".join(prompts)

        response_format = agent.get("response_format")
        if response_format not in ("current", "original"):
            response_format = self.default_format
        if response_format == "original":
            return {**fields, "extra_prompt": extra_prompt} if extra_prompt else fields
        body: dict[str, Any] = {}
        if fields:
            body["metadata"] = fields
        if extra_prompt:
            body["extra_prompt"] = extra_prompt
        return body
