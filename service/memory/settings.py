"""An agent's memory settings: the reserved `memory` map of `agents/<agent_id>`.

    memory: {enabled: true, metadata_keys: ["topic"], tool_params: {"save_note": ["note"]},
             calls: 5, group: "front-desk"}

Every field but `enabled` is optional. A setting of the wrong type turns memory off for the agent
(fails closed, like the other reserved fields) and is listed by `scripts/profiles.py show`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FIELD = "memory"
MAX_CALLS = 20
DEFAULT_CALLS = 5
MAX_KEYS = 20  # metadata keys, and tool parameters, each
# Names reachable from templates ({memory.metadata.topic}, {memory.tools.save_note.note}).
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
GROUP = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# Whose call it is, as a profile document id (service.prefetch.answer.PrefetchService.caller_id,
# handed in: memory never imports the prefetch): (agent document, agent id, from, to, metadata).
CallerId = Callable[
    [Mapping[str, Any] | None, str, str | None, str | None, Mapping[str, Any]], str | None
]
KNOWN = frozenset({"enabled", "metadata_keys", "tool_params", "calls", "group"})


@dataclass(frozen=True)
class MemorySettings:
    agent_id: str
    metadata_keys: tuple[str, ...] = ()
    tool_params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    calls: int = DEFAULT_CALLS
    group: str | None = None

    @property
    def scope(self) -> str:
        """Whose memory it is: this agent's alone, or shared by the agents naming one group."""
        return f"group:{self.group}" if self.group else f"agent:{self.agent_id}"


def memory_problems(agent: Mapping[str, Any]) -> list[str]:
    """What is wrong with an agent's `memory` field ([] when absent or right)."""
    if FIELD not in agent:
        return []
    memory = agent[FIELD]
    if not isinstance(memory, Mapping):
        return ["memory must be a map"]
    problems = [f"memory.{key} is not a memory setting" for key in memory if key not in KNOWN]
    if not isinstance(memory.get("enabled", False), bool):
        problems.append("memory.enabled must be true or false (a boolean)")
    keys = memory.get("metadata_keys", [])
    if not _names(keys) or len(keys) > MAX_KEYS:
        problems.append(f"memory.metadata_keys must be a list of at most {MAX_KEYS} field names")
    tools = memory.get("tool_params", {})
    if not (
        isinstance(tools, Mapping)
        and all(isinstance(name, str) and NAME.match(name) for name in tools)
        and all(_names(params) for params in tools.values())
        and sum(len(params) for params in tools.values()) <= MAX_KEYS
    ):
        problems.append(
            f"memory.tool_params must map tools to lists of parameter names ({MAX_KEYS} at most)"
        )
    calls = memory.get("calls", DEFAULT_CALLS)
    if isinstance(calls, bool) or not isinstance(calls, int) or not 1 <= calls <= MAX_CALLS:
        problems.append(f"memory.calls must be a whole number from 1 to {MAX_CALLS}")
    group = memory.get("group")
    if group is not None and not (isinstance(group, str) and GROUP.match(group)):
        problems.append("memory.group must be a name (letters, digits, _ and -)")
    return problems


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and NAME.match(v) for v in value)


def memory_settings(agent_id: str, agent: Mapping[str, Any] | None) -> MemorySettings | None:
    """The agent's settings when memory is on and every setting is right; else None."""
    memory = (agent or {}).get(FIELD)
    if not isinstance(memory, Mapping) or memory.get("enabled") is not True:
        return None
    if memory_problems(agent or {}) or (agent or {}).get("disabled", False) is not False:
        return None
    tools = memory.get("tool_params", {})
    return MemorySettings(
        agent_id=agent_id,
        metadata_keys=tuple(dict.fromkeys(memory.get("metadata_keys", []))),
        tool_params=tuple((name, tuple(dict.fromkeys(params))) for name, params in tools.items()),
        calls=memory.get("calls", DEFAULT_CALLS),
        group=memory.get("group"),
    )


def profile_allows(profile: Mapping[str, Any] | None, agent_id: str) -> bool:
    """A profile's `agents` and `disabled` apply to memory too (no profile: allowed)."""
    if profile is None:
        return True
    if profile.get("disabled", False) is not False:
        return False
    if "agents" not in profile:
        return True
    allowed = profile["agents"]  # of the wrong type: nobody (as for the profile itself)
    return isinstance(allowed, list) and agent_id in allowed
