"""Who is calling: which parameters of a prefetch query may identify the caller, for this agent.

Millis puts its own parameters (`agent_id`, `session_id` and, on phone calls only, `from` and `to`)
and every key of the call's metadata into one query string, and does not document the order. The
metadata comes from whoever starts the call (a web widget on a public page, say), so a web call
with metadata `from=+15551234567` sends a `from` that looks exactly like the one Millis sends on
a phone call. Hence:

- **No first value wins.** A parameter sent twice with different values is ambiguous: for
  `agent_id` and `session_id` the request is refused (400 `ambiguous_parameter`); any other
  parameter is treated as absent (no number, lookup value, signature or template value from it).
- **Numbers identify a caller only where the agent says they can** (agent setting
  `caller_numbers`, default `PREFETCH_CALLER_NUMBERS`): `phone` for agents that take phone calls
  only (the numbers are Millis's), `signed` for numbers signed by your backend (`from_sig` /
  `to_sig`, hex HMAC-SHA256 with the agent's LOOKUP_SIGNING_SECRETS), `off` for none.

This module decides; service.prefetch.answer reads and answers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

CallerNumbers = Literal["phone", "signed", "off"]
CALLER_NUMBER_MODES: tuple[CallerNumbers, ...] = ("phone", "signed", "off")
# The agent document's field naming the mode.
CALLER_NUMBERS_SETTING = "caller_numbers"
# Parameters Millis itself sends; the rest of the query string is the call's metadata.
CALL_PARAMETERS = frozenset({"agent_id", "session_id", "from", "to"})
# Without one value for each of these, the request cannot be answered for anyone.
REQUIRED_UNAMBIGUOUS = ("agent_id", "session_id")
SIGNATURE_SUFFIX = "_sig"


class AmbiguousParameter(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} was sent more than once with different values")
        self.name = name


def single_valued(parameters: Iterable[tuple[str, Sequence[str]]]) -> dict[str, str]:
    """One value per parameter name, from (name, every value sent) pairs. A name sent with
    different values is left out, or refused for REQUIRED_UNAMBIGUOUS (AmbiguousParameter)."""
    values: dict[str, str] = {}
    for name, sent in parameters:
        distinct = set(sent)
        if len(distinct) == 1:
            values[name] = sent[0]
        elif name in REQUIRED_UNAMBIGUOUS:
            raise AmbiguousParameter(name)
    return values


def caller_numbers_mode(agent: Mapping[str, Any] | None, default: CallerNumbers) -> CallerNumbers:
    """The agent's own setting when it has one (a value of the wrong type means `off`: fail
    closed, as for every reserved field), else the deployment's default."""
    if agent is None or CALLER_NUMBERS_SETTING not in agent:
        return default
    mode = agent[CALLER_NUMBERS_SETTING]
    return mode if mode in CALLER_NUMBER_MODES else "off"


def signature(secret: str, value: str) -> str:
    """What the user's backend sends as `<parameter>_sig` when it starts the call."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def signed(value: str, sent_signature: str | None, secrets: Sequence[str]) -> bool:
    # Bytes, not str: compare_digest raises on non-ASCII text, and a caller's `é` would have
    # turned the whole answer into the empty error answer.
    sent = (sent_signature or "").lower().encode()
    return any(hmac.compare_digest(signature(secret, value).encode(), sent) for secret in secrets)


def identifying_numbers(
    numbers: Mapping[str, str | None],
    metadata: Mapping[str, str],
    mode: CallerNumbers,
    secrets: Sequence[str],
) -> list[str]:
    """The raw `from` / `to` values (in that order) that may identify the caller under `mode`."""
    if mode == "off":
        return []
    found = []
    for name in ("from", "to"):
        raw = numbers.get(name)
        if not raw:
            continue
        if mode == "signed" and not signed(raw, metadata.get(name + SIGNATURE_SUFFIX), secrets):
            continue
        found.append(raw)
    return found
