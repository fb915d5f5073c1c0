"""Erasing caller memory (scripts/erase.py): a caller's memories with every session marker, or
one session's contribution wherever it was counted."""

from __future__ import annotations

from typing import Any

from service.memory.paths import MARKER_COLLECTION, MEMORY_COLLECTION
from service.memory.record import derived


def erase_caller_memory(
    client: Any, profiles_collection: str, caller_ids: list[str], *, dry_run: bool
) -> tuple[int, int]:
    """Delete every memory of these callers (all scopes) and their session markers.
    (memories, markers) erased; list_documents also finds memories whose profile never existed."""
    memories = markers = 0
    for caller_id in caller_ids:
        parent = client.collection(profiles_collection).document(caller_id)
        for memory in parent.collection(MEMORY_COLLECTION).list_documents():
            for marker in memory.collection(MARKER_COLLECTION).list_documents():
                markers += 1
                if not dry_run:
                    marker.delete()
            if memory.get().exists:
                memories += 1
            if not dry_run:
                memory.delete()
    return memories, markers


def erase_session_memory(client: Any, session_id: str, *, dry_run: bool) -> int:
    """Take one session out of every memory that counted it: its entry, its count, its marker.
    The markers erased."""
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client.collection_group(MARKER_COLLECTION).where(
        filter=FieldFilter("session_id", "==", session_id)
    )
    found = list(query.stream())
    if dry_run:
        return len(found)
    for marker in found:
        memory_ref = marker.reference.parent.parent

        @firestore.transactional
        def forget(
            transaction: Any, marker_ref: Any = marker.reference, memory_ref: Any = memory_ref
        ) -> None:
            snapshot = memory_ref.get(transaction=transaction)
            memory = snapshot.to_dict() if snapshot.exists else None
            if memory:
                recent = [e for e in memory.get("recent", []) if e.get("session_id") != session_id]
                calls = max(0, int(memory.get("calls", 0)) - 1)
                if calls == 0 or not recent:
                    transaction.delete(memory_ref)
                else:
                    summary = derived(recent, calls=calls, first_call_at=memory["first_call_at"])
                    transaction.set(memory_ref, {**summary, "expires_at": memory.get("expires_at")})
            transaction.delete(marker_ref)

        forget(client.transaction())
    return len(found)
