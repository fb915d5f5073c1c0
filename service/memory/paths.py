"""Where caller memory lives, below the caller's profile id (what a person sees in the Firestore
console):

    profiles/<caller>/memory/<scope>                       the memory (record.py writes it)
    profiles/<caller>/memory/<scope>/memory_sessions/<id>  one marker per session counted

`<caller>` is an E.164 number or a lookup id (`lookup:crm_id:C-1001`), `<scope>` is
`agent:<agent_id>` or `group:<name>` (settings.py).
"""

from __future__ import annotations

import hashlib

MEMORY_COLLECTION = "memory"
MARKER_COLLECTION = "memory_sessions"


def memory_document_id(caller_id: str, scope: str) -> str:
    """The memory's path below the profiles collection."""
    return f"{caller_id}/{MEMORY_COLLECTION}/{scope}"


def memory_path(profiles_collection: str, caller_id: str, scope: str) -> str:
    return f"{profiles_collection}/{memory_document_id(caller_id, scope)}"


def marker_id(session_id: str) -> str:
    """Session ids are the caller's text (up to 512 characters): a hash is always a valid id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]
