"""The agent configuration as stored by default (STORE_AGENT_CONFIG=allowlist): only the parts
people query, by path, each kept in the form it is queried in.

Safe by construction: a credential can only be stored if it sits in a kept field, so what is kept
is the prompt, voice, model and tool definitions (names, descriptions, parameter schemas), flags,
numbers and short identifiers. Everything else is dropped whole, whatever its name or shape:
headers, auth blocks, credentials, environment lists, fields Millis adds later. URLs are kept as
their origin (`https://api.acme.io`): their path, query, fragment and user-info are where
capability URLs and tokens live. Kept text still goes through the detectors (`Redactor.redact`).

The shape follows Millis's agent configuration (prompt, voice, llm, flow, tools with `params`,
`millis_functions`, `app_functions`, webhooks as a URL or `{url, headers}`) and the common
function-calling shape (`{"type": "function", "function": {"name", "description",
"parameters": <JSON schema>}}`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from service.end_of_call.redaction.values import REDACTED

# A node of the shape: a function from the value sent to the value kept (DROP to drop it).
Keep = Callable[[Any, Callable[[str], str]], Any]


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()
# Ten or more characters mixing letters and digits: not a name people choose for a host.
_RANDOM_LABEL = re.compile(r"^(?=[^.]*\d)(?=[^.]*[A-Za-z])[A-Za-z0-9\-]{10,}")
_ORIGIN = re.compile(r"^\s*((?:https?|wss?)://)(?:[^@/?#\s]*@)?([A-Za-z0-9.\-]+(?::\d{1,5})?)")


def value(item: Any, text: Callable[[str], str]) -> Any:
    """A flag, a number or a short identifier (a model, a voice id, a language)."""
    if item is None or isinstance(item, bool | int | float):
        return item
    if isinstance(item, str):
        return text(item)
    return DROP


def origin(item: Any, text: Callable[[str], str]) -> Any:
    """A URL reduced to scheme and host: which service is called, never how it is authorised."""
    if not isinstance(item, str):
        return DROP
    match = _ORIGIN.match(item)
    if not match:
        return DROP
    # A random-looking label is a capability host (`eo1a2b3c4d5e6f7.m.pipedream.net`, a tunnel).
    labels = [
        REDACTED if _RANDOM_LABEL.search(label) and not label.isdigit() else label
        for label in match.group(2).split(".")
    ]
    return match.group(1) + ".".join(labels)


def obj(fields: dict[str, Keep]) -> Keep:
    """An object: only the listed keys, each by its own node."""

    def keep(item: Any, text: Callable[[str], str]) -> Any:
        if not isinstance(item, dict):
            return DROP
        kept = {key: fields[key](child, text) for key, child in item.items() if key in fields}
        return {key: child for key, child in kept.items() if child is not DROP}

    return keep


def list_of(node: Keep) -> Keep:
    def keep(item: Any, text: Callable[[str], str]) -> Any:
        if not isinstance(item, list):
            return DROP
        return [kept for kept in (node(child, text) for child in item) if kept is not DROP]

    return keep


def either(*nodes: Keep) -> Keep:
    """The first node that keeps something (a webhook is a URL or an object)."""

    def keep(item: Any, text: Callable[[str], str]) -> Any:
        for node in nodes:
            kept = node(item, text)
            if kept is not DROP:
                return kept
        return DROP

    return keep


def numbers(item: Any, text: Callable[[str], str]) -> Any:
    """A map of any names to numbers or flags (vocabulary boosts, voice settings): names are
    kept, text values are not (a setting's name can be anything, so can its value)."""
    if not isinstance(item, dict):
        return DROP
    return {
        text(str(key)): child
        for key, child in item.items()
        if child is None or isinstance(child, bool | int | float)
    }


def json_schema(item: Any, text: Callable[[str], str]) -> Any:
    """A tool's parameter schema: structure and descriptions, never `default`, `const` or
    `examples` (values, where a constant API key is set)."""
    return _JSON_SCHEMA(item, text)


_JSON_SCHEMA = obj(
    {
        "type": either(value, list_of(value)),
        "description": value,
        "title": value,
        "format": value,
        "properties": lambda item, text: (
            {text(str(k)): json_schema(v, text) for k, v in item.items()}
            if isinstance(item, dict)
            else DROP
        ),
        "items": json_schema,
        "required": list_of(value),
        "enum": list_of(value),
        "minimum": value,
        "maximum": value,
        "minLength": value,
        "maxLength": value,
        "additionalProperties": lambda item, text: item if isinstance(item, bool) else DROP,
    }
)

_MESSAGES = list_of(value)
_PARAM = obj({"name": value, "type": value, "required": value, "description": value})
_WEBHOOK = either(origin, obj({"url": origin}))
_TOOL = obj(
    {
        "name": value,
        "description": value,
        "type": value,
        "params": list_of(_PARAM),
        "parameters": json_schema,
        "function": obj({"name": value, "description": value, "parameters": json_schema}),
        "webhook": origin,
        "url": origin,
        "method": value,
        "timeout": value,
        "run_after_call": value,
        "messages": _MESSAGES,
        "response_mode": value,
        "execute_after_message": value,
        "exclude_session_id": value,
    }
)
_VOICE = obj({"provider": value, "voice_id": value, "model": value, "settings": numbers})
_LLM = obj(
    {
        "provider": value,
        "model": value,
        "temperature": value,
        "max_tokens": value,
        "history_settings": numbers,
    }
)
_SPEECH = obj({"provider": value, "model": value, "multilingual": value, "language": value})
_FLOW = obj(
    {
        "user_start_first": value,
        "interruption": numbers,
        "response_delay": numbers,
        "auto_fill_responses": obj({"response_gap_threshold": value, "messages": _MESSAGES}),
        "agent_terminate_call": obj(
            {"enabled": value, "instruction": value, "messages": _MESSAGES}
        ),
        "voicemail": obj({"action": value, "message": value, "continue_on_voice_activity": value}),
        # The transfer number is left out: it may be a person's own phone.
        "call_transfer": obj({"instruction": value, "messages": _MESSAGES}),
        "inactivity_handling": obj({"idle_time": value, "message": value}),
        "dtmf_dial": obj({"enabled": value, "instruction": value}),
    }
)

AGENT_CONFIG = obj(
    {
        "name": value,
        "description": value,
        "type": value,
        "language": value,
        "timezone": value,
        "prompt": value,
        "first_message": value,
        "voice": _VOICE,
        "voice_id": value,
        "model": value,
        "provider": value,
        "temperature": value,
        "max_tokens": value,
        "llm": _LLM,
        "tts": _SPEECH,
        "stt": _SPEECH,
        "speech_to_text": _SPEECH,
        "flow": _FLOW,
        "tools": list_of(_TOOL),
        "millis_functions": list_of(
            obj(
                {
                    "name": value,
                    "description": value,
                    "type": value,
                    "messages": _MESSAGES,
                    "response_mode": value,
                }
            )
        ),
        "app_functions": list_of(obj({"name": value})),
        "custom_llm_websocket": origin,
        "vad_threshold": value,
        "session_timeout": obj({"max_duration": value, "max_idle": value, "message": value}),
        "privacy_settings": numbers,
        "custom_vocabulary": obj({"keywords": numbers}),
        "switch_language": obj({"languages": list_of(value)}),
        "call_settings": numbers,
        "extra_prompt_webhook": _WEBHOOK,
        "session_data_webhook": _WEBHOOK,
    }
)


def keep_allowed(
    config: dict[str, Any],
    text: Callable[[str], str],
    redact_whole: Callable[[Any], Any],
    extra_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """What is stored of `config`: the shape above, kept text through `text` (the detectors).

    `extra_keys` (AGENT_CONFIG_ALLOWLIST) are dotted paths the operator wants too
    (`flow.voicemail`, `crm_account`); each is kept whole, through `redact_whole` (every redaction
    layer), unless the shape above already keeps that path its own way.
    """
    kept: dict[str, Any] = AGENT_CONFIG(config, text)
    for path in extra_keys:
        _keep_path(config, kept, path.split("."), redact_whole)
    return kept


def _keep_path(
    source: dict[str, Any],
    target: dict[str, Any],
    parts: list[str],
    redact_whole: Callable[[Any], Any],
) -> None:
    key, rest = parts[0], parts[1:]
    if not key or key not in source:
        return
    if not rest:
        if key not in target:
            target[key] = redact_whole({key: source[key]})[key]
        return
    child = source[key]
    if not isinstance(child, dict):
        return
    existing = target.get(key)
    if existing is not None and not isinstance(existing, dict):
        return
    holder = existing if existing is not None else {}
    _keep_path(child, holder, rest, redact_whole)
    if holder:
        target[key] = holder
