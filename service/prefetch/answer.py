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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from service.memory.paths import memory_document_id
from service.memory.serve import served_memory
from service.memory.settings import memory_settings, profile_allows
from service.prefetch.identity import (
    CALLER_NUMBER_MODES,
    CALLER_NUMBERS_SETTING,
    SIGNATURE_SUFFIX,
    CallerNumbers,
    caller_numbers_mode,
    identifying_numbers,
    signed,
)
from service.prefetch.profiles import DocumentKey, ProfileStore

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
        "memory",  # caller memory settings (service/memory/settings.py)
        CALLER_NUMBERS_SETTING,
    }
)

LOOKUP_PREFIX = "lookup:"
LOOKUP_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# A document id we accept from the outside: no "/", not "." or "..", not "__reserved__".
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SAFE_DOCUMENT_ID = re.compile(r"^(?!\.\.?$)(?!__.*__$)[A-Za-z0-9_.@+:\-]{1,128}$")
_PLACEHOLDER = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3})\}"
)
_MAX_TEMPLATE_VALUE_CHARS = 1000
_MAX_EXTRA_PROMPT_CHARS = 20_000
_MAX_SUBSTITUTIONS = 1_000
# Part of the prefetch deadline kept for rendering templates (they take ~10 us; bounded ones at
# most a few ms), so the answer, templates included, is ready by the deadline.
_RENDER_RESERVE_SECONDS = 0.05


def normalise_phone(raw: str | None, default_region: str) -> str | None:
    """E.164 form of a phone number, or None when it is not one or could be two different people.

    - An unencoded `+` in a query string decodes to a space: ` 6591234567` is `+6591234567`.
    - A number without `+` is read in `default_region` only when it does not also read as a valid
      international number: `6591234567` is a Singapore number written without `+` as much as a
      US one, and must not answer with another person's profile.
    """
    if not raw or len(raw) > 64:
        return None
    if _E164.match(raw):
        return raw  # what Millis sends: already E.164, and parsing costs more than the read
    # Imported on first use (30 ms): start-up need not pay for what E.164 numbers never use.
    import phonenumbers

    if raw[:1].isspace() and raw.lstrip()[:1].isdigit():
        raw = "+" + raw.lstrip()
    if raw.lstrip().startswith("+"):
        return _parse(raw, None, phonenumbers.is_possible_number)
    national = _parse(raw, default_region, phonenumbers.is_possible_number)
    as_international = _parse("+" + raw.strip(), None, phonenumbers.is_valid_number)
    if national is None or (as_international is not None and as_international != national):
        return None
    return national


def _parse(raw: str, region: str | None, check: Any) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not check(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def safe_document_id(value: Any) -> str | None:
    if isinstance(value, str) and _SAFE_DOCUMENT_ID.match(value):
        return value
    return None


def render_template(
    template: str,
    values: Mapping[str, Any],
    *,
    max_chars: int = _MAX_EXTRA_PROMPT_CHARS,
    deadline: float | None = None,
) -> str:
    """Fill `{field}` / `{map.field}` placeholders; unknown placeholders stay as written.

    Bounded as it goes, whatever the profile holds: output stops at `max_chars`, after
    _MAX_SUBSTITUTIONS placeholders, or at `deadline` (time.monotonic()), and each distinct value
    is turned into text once (a large map referenced a thousand times is serialised once).
    """
    pieces: list[str] = []
    size = 0
    texts: dict[str, str] = {}
    position = 0
    for count, match in enumerate(_PLACEHOLDER.finditer(template)):
        if count >= _MAX_SUBSTITUTIONS or (deadline is not None and time.monotonic() > deadline):
            # Stop here: the text up to this placeholder is the answer.
            pieces.append(template[position : match.start()][: max_chars - size])
            return "".join(pieces)
        for text in (template[position : match.start()], _value_text(match, values, texts)):
            pieces.append(text[: max_chars - size])
            size += len(pieces[-1])
        position = match.end()
        if size >= max_chars:
            return "".join(pieces)
    pieces.append(template[position:][: max_chars - size])
    return "".join(pieces)


def _value_text(match: re.Match[str], values: Mapping[str, Any], texts: dict[str, str]) -> str:
    path = match.group(1)
    if path not in texts:
        value: Any = values
        for part in path.split("."):
            if not isinstance(value, Mapping) or part not in value:
                texts[path] = match.group(0)
                return texts[path]
            value = value[part]
        if value is None:
            texts[path] = ""
        elif isinstance(value, str):
            texts[path] = value[:_MAX_TEMPLATE_VALUE_CHARS]
        else:
            texts[path] = bounded_json(value, _MAX_TEMPLATE_VALUE_CHARS)
    return texts[path]


_ENCODER = json.JSONEncoder(ensure_ascii=False)


def bounded_json(value: Any, max_chars: int) -> str:
    """The first `max_chars` characters of `value` as JSON, without encoding the rest:
    `iterencode` is the pure-Python encoder, a generator, so a 900 KB map costs only the chunks
    read before the cap (json.dumps encoded all of it, ~10 ms, on every hostile request)."""
    pieces: list[str] = []
    size = 0
    for chunk in _ENCODER.iterencode(value):
        pieces.append(chunk)
        size += len(chunk)
        if size >= max_chars:
            break
    return "".join(pieces)[:max_chars]


def reserved_field_problems(document: Mapping[str, Any], kind: str = "profile") -> list[str]:
    """Reserved fields of the wrong type. Each one restricts (fails closed): a profile with
    `agents: "agent-x"` (text, not a list) or `disabled: "true"` (text) is served to nobody, not
    to everybody. Reported by scripts/profiles.py import and show."""
    problems = []
    if "disabled" in document and not isinstance(document["disabled"], bool):
        problems.append("disabled must be true or false (a boolean)")
    agents = document.get("agents")
    agent_ids = isinstance(agents, list) and all(isinstance(a, str) for a in agents)
    # null too: `agents: null` is not "every agent" any more than `agents: "x"` is
    if kind == "profile" and "agents" in document and not agent_ids:
        problems.append("agents must be a list of agent ids")
    key = document.get("lookup_key", "")
    if kind == "agent" and key != "" and not (isinstance(key, str) and LOOKUP_KEY.match(key)):
        problems.append("lookup_key must be a parameter name (letters, digits, _ and -)")
    if (
        kind == "agent"
        and CALLER_NUMBERS_SETTING in document
        and document[CALLER_NUMBERS_SETTING] not in CALLER_NUMBER_MODES
    ):
        problems.append(f"caller_numbers must be one of {', '.join(CALLER_NUMBER_MODES)}")
    prompt = document.get("extra_prompt")
    if prompt is not None and not isinstance(prompt, str):
        problems.append("extra_prompt must be text")
    return problems


def lookup_document_id(key: str, value: str) -> str:
    """Profiles found by a lookup key live apart from phone-number profiles: a caller who sends
    `crm_id=+15551234567` reaches `lookup:crm_id:+15551234567`, never the profile of that number."""
    return f"{LOOKUP_PREFIX}{key}:{value}"


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
    profile_id: str | None = None  # the profiles/ document that answered (scripts/profiles.py show)


class PrefetchService:
    def __init__(
        self,
        store: ProfileStore,
        *,
        deadline_seconds: float,
        default_format: ResponseFormat,
        default_region: str,
        default_lookup_key: str,
        lookup_signing_secrets: Mapping[str, Sequence[str]] | None = None,
        default_caller_numbers: CallerNumbers = "off",
    ) -> None:
        self.store = store
        # agent id -> secrets (several during a rotation); those agents' lookups must be signed,
        # and so must their numbers when the agent's caller_numbers is `signed`.
        self.lookup_signing_secrets = dict(lookup_signing_secrets or {})
        self.deadline_seconds = deadline_seconds
        self.default_format = default_format
        self.default_region = default_region
        self.default_lookup_key = default_lookup_key
        self.default_caller_numbers = default_caller_numbers

    def answer(self, request: PrefetchRequest) -> PrefetchAnswer:
        deadline = time.monotonic() + self.deadline_seconds
        # Templates render inside the deadline: the reads leave them a small part of it.
        read_deadline = deadline - min(_RENDER_RESERVE_SECONDS, self.deadline_seconds / 10)
        agent_key: DocumentKey = ("agent", request.agent_id)
        agent_id_ok = safe_document_id(request.agent_id) is not None

        # After an agent's first call its document is cached (a missing one too): what it allows
        # is known before the read, which then fetches only those candidates, and nothing at all
        # for a disabled agent. Before that, the candidates the agent could allow are read in the
        # same round trip and only those that the agent as read allows are used.
        known, cached_agent = (
            self.store.last_known_entry(agent_key) if agent_id_ok else (True, None)
        )
        if not known:
            planned = self._candidates(None, request, speculative=True)
        elif self._serves(cached_agent or {}):
            planned = self._candidates(cached_agent, request)
        else:
            planned = []
        keys: list[DocumentKey] = [agent_key] if agent_id_ok else []
        keys.extend(("profile", document_id) for document_id in planned)
        # The caller's memory joins the same read once the agent's memory settings are known.
        memory_key = self._memory_key(cached_agent, request) if planned else None
        if memory_key:
            keys.append(memory_key)

        result = self.store.read(keys, max(0.0, read_deadline - time.monotonic()))
        agent = result.documents.get(agent_key) or {}
        if not self._serves(agent):
            # A disabled agent, or one whose settings are of the wrong type: nothing for anyone.
            return PrefetchAnswer({}, False, result.from_cache, result.failure)
        # The agent as read decides, not the cached copy: an agent whose lookup key was just
        # removed (say, after abuse) must not keep answering lookups from the old one.
        candidates = self._candidates(agent, request)
        unread: list[DocumentKey] = [
            ("profile", document_id)
            for document_id in candidates
            if ("profile", document_id) not in keys
        ]
        memory_key = self._memory_key(agent, request) if agent_id_ok else None
        if memory_key and memory_key not in keys:  # the agent's first call on this instance
            unread.append(memory_key)
        remaining = read_deadline - time.monotonic()
        if unread and remaining > 0.005:
            extra = self.store.read(unread, remaining)
            result.documents.update(extra.documents)
            result.failure = result.failure or extra.failure

        profile, profile_id = None, None
        for document_id in candidates:
            document = result.documents.get(("profile", document_id))
            if document and self._usable(document, request.agent_id):
                profile, profile_id = document, document_id
                break

        memory = None
        if memory_key:
            caller = memory_key[1].split("/", 1)[0]
            if profile_allows(result.documents.get(("profile", caller)), request.agent_id):
                memory = served_memory(result.documents.get(memory_key), datetime.now(UTC))
        body = self._shape(agent, profile or {}, request, deadline, memory)
        if result.failure:
            log.warning(
                "profile store unavailable; answered from cache or agent defaults",
                extra={"agent_id": request.agent_id, "failure": result.failure},
            )
        return PrefetchAnswer(
            body, profile is not None, result.from_cache, result.failure, profile_id
        )

    def caller_id(
        self,
        agent: Mapping[str, Any] | None,
        agent_id: str,
        from_number: str | None,
        to_number: str | None,
        metadata: Mapping[str, Any],
    ) -> str | None:
        """Whose call it is, as a profile document id: the first candidate the prefetch would
        look up (the agent's lookup key value, signed when required, else the first number that
        identifies callers for this agent under its `caller_numbers`, not one of its own); None
        for a caller nothing identifies, or a disabled agent. The caller memory of both webhooks is
        keyed by this (service/memory)."""
        if not self._serves(agent or {}):
            return None
        request = PrefetchRequest(
            agent_id,
            "",
            from_number,
            to_number,
            {key: value for key, value in metadata.items() if isinstance(value, str)},
        )
        candidates = self._candidates(agent, request)
        return candidates[0] if candidates else None

    def _memory_key(
        self, agent: Mapping[str, Any] | None, request: PrefetchRequest
    ) -> DocumentKey | None:
        settings = memory_settings(request.agent_id, agent)
        if settings is None:
            return None
        caller = self.caller_id(
            agent, request.agent_id, request.from_number, request.to_number, request.metadata
        )
        return ("memory", memory_document_id(caller, settings.scope)) if caller else None

    @staticmethod
    def _serves(agent: Mapping[str, Any]) -> bool:
        return agent.get("disabled", False) is False and not reserved_field_problems(agent, "agent")

    def _candidates(
        self, agent: Mapping[str, Any] | None, request: PrefetchRequest, speculative: bool = False
    ) -> list[str]:
        """Profile document ids that may answer for this caller, best first: the lookup key's,
        then the numbers that identify callers for this agent (not its own numbers).
        `speculative`: the agent is not known yet; every number it could allow."""
        candidates = []
        lookup_id = self._lookup_id(agent, request)
        if lookup_id:
            candidates.append(lookup_id)
        mode = "phone" if speculative else caller_numbers_mode(agent, self.default_caller_numbers)
        secrets = self.lookup_signing_secrets.get(request.agent_id, ())
        sent = {"from": request.from_number, "to": request.to_number}
        own_numbers = self._own_numbers(agent or {})
        for raw in identifying_numbers(sent, request.metadata, mode, secrets):
            number = normalise_phone(raw, self.default_region)
            if number and number not in own_numbers and number not in candidates:
                candidates.append(number)
        return candidates

    def _lookup_id(self, agent: Mapping[str, Any] | None, request: PrefetchRequest) -> str | None:
        # An agent's own lookup_key decides when present: "" turns lookups off for the agent, and
        # a value of the wrong type (null, a number, a list) turns them off rather than falling
        # back to PREFETCH_LOOKUP_KEY.
        key = (agent or {}).get("lookup_key", self.default_lookup_key)
        if not isinstance(key, str) or not LOOKUP_KEY.match(key):
            return None
        value = request.metadata.get(key)
        if not value or safe_document_id(value) is None:
            return None
        secrets = self.lookup_signing_secrets.get(request.agent_id)
        # This agent's lookups must be signed by the user's backend: unsigned or wrongly signed
        # values are ignored (the numbers still apply where the agent allows them).
        if secrets and not signed(value, request.metadata.get(key + SIGNATURE_SUFFIX), secrets):
            return None
        return lookup_document_id(key, value)

    def _own_numbers(self, agent: Mapping[str, Any]) -> set[str | None]:
        own = agent.get("phone_numbers")
        if not isinstance(own, list):
            return set()
        return {normalise_phone(str(number), self.default_region) for number in own}

    @staticmethod
    def _usable(profile: Mapping[str, Any], agent_id: str) -> bool:
        if profile.get("disabled", False) is not False or reserved_field_problems(profile):
            return False
        allowed = profile.get("agents")
        return allowed is None or agent_id in allowed

    def _shape(
        self,
        agent: Mapping[str, Any],
        profile: Mapping[str, Any],
        request: PrefetchRequest,
        deadline: float,
        memory: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fields = {key: value for key, value in agent.items() if key not in AGENT_SETTINGS}
        fields.update((key, value) for key, value in profile.items() if key not in PROFILE_SETTINGS)
        if memory is not None:  # what this agent remembers of the caller wins over a field
            fields["memory"] = memory

        call_values = {"agent_id": request.agent_id, "session_id": request.session_id}
        if agent.get("allow_metadata_override") is True:
            template_values = {**fields, **request.metadata, **call_values}
        else:  # metadata fills gaps only: a caller cannot rewrite what the profile says
            template_values = {**request.metadata, **fields, **call_values}
        prompts = [
            text
            for text in (agent.get("extra_prompt"), profile.get("extra_prompt"))
            if isinstance(text, str) and text.strip()
        ]
        # One budget for both prompts: the answer never exceeds _MAX_EXTRA_PROMPT_CHARS.
        extra_prompt = render_template("\n".join(prompts), template_values, deadline=deadline)

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
