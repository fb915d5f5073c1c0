"""Dead letters: call rows BigQuery did not take, kept durably in Firestore until replayed.

Each dead letter is a document `{collection}/{id}` holding the row as zlib-compressed JSON. A row
whose compressed form does not fit in one document (Firestore's limit is 1 MiB) is split into
`chunks/{n}` sub-documents, written before the parent: a parent document that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.retry import Retry
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from service.stored_row import conform_stored_row, insert_id
from service.stores.errors import InsertFailed

log = logging.getLogger(__name__)

# Below Firestore's 1,048,487-byte limit for a bytes field, leaving room for the other fields.
CHUNK_BYTES = 900_000
ENCODING = "zlib+json"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    session_id: str
    reason: str
    error: str
    created_at: datetime | None
    row: dict[str, Any]


def dead_letter_id(row: dict[str, Any]) -> str:
    """Same row, same id: storing a row twice keeps one dead letter."""
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(canonical).hexdigest()[:40]


class DeadLetterStore:
    def __init__(
        self, client: firestore.Client, collection: str, timeout_seconds: float = 10.0
    ) -> None:
        self.client = client
        self.collection_name = collection
        self.timeout_seconds = timeout_seconds

    @property
    def collection(self) -> firestore.CollectionReference:
        return self.client.collection(self.collection_name)

    def store(self, row: dict[str, Any], *, reason: str, error: str) -> str:
        """Write the row; every chunk and the parent share one budget of `timeout_seconds`."""
        deadline = time.monotonic() + self.timeout_seconds
        document_id = dead_letter_id(row)
        compressed = zlib.compress(json.dumps(row, ensure_ascii=False).encode(), 6)
        chunks = [compressed[i : i + CHUNK_BYTES] for i in range(0, len(compressed), CHUNK_BYTES)]
        parent = self.collection.document(document_id)
        fields: dict[str, Any] = {
            "session_id": str(row.get("session_id", ""))[:1500],
            "reason": reason,
            "error": error[:2000],
            "encoding": ENCODING,
            "size_bytes": len(compressed),
            "created_at": firestore.SERVER_TIMESTAMP,
        }
        if len(chunks) == 1:
            fields["payload"] = compressed
        else:
            fields["chunk_count"] = len(chunks)
            for number, chunk in enumerate(chunks):
                remaining = self._remaining(deadline)
                parent.collection("chunks").document(str(number)).set(
                    {"data": chunk}, retry=self._retry(remaining), timeout=remaining
                )
        remaining = self._remaining(deadline)
        parent.set(fields, retry=self._retry(remaining), timeout=remaining)
        return document_id

    @staticmethod
    def _remaining(deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            raise TimeoutError("the dead-letter budget is spent")
        return remaining

    @staticmethod
    def _retry(remaining: float) -> Retry:
        # The library's default retry may outlast the request; bound it by what is left.
        return Retry(initial=0.1, maximum=1.0, timeout=remaining)

    def list(self, limit: int | None = None) -> Iterator[DeadLetter]:
        query = self.collection.order_by("created_at")
        if limit:
            query = query.limit(limit)
        for snapshot in query.stream(timeout=60):
            data = snapshot.to_dict() or {}
            if "payload" in data:
                compressed = bytes(data["payload"])
            else:
                chunks = parent_chunks(snapshot.reference, int(data.get("chunk_count", 0)))
                compressed = b"".join(chunks)
            yield DeadLetter(
                id=snapshot.id,
                session_id=data.get("session_id", ""),
                reason=data.get("reason", ""),
                error=data.get("error", ""),
                created_at=data.get("created_at"),
                row=json.loads(zlib.decompress(compressed)),
            )

    def claim(self, document_id: str, owner: str, lease_seconds: float) -> bool:
        """Take a dead letter for `lease_seconds`, in a transaction: two replays running at once
        (overlapping schedules, a manual run beside the job) never insert the same letter
        together. False when it is gone or another replay holds it. A lease that expires (a
        replay that crashed) frees the letter by itself: nothing to clean up."""
        reference = self.collection.document(document_id)
        now = datetime.now(UTC)

        @firestore.transactional
        def take(transaction: firestore.Transaction) -> bool:
            snapshot = reference.get(transaction=transaction)
            if not snapshot.exists:
                return False
            lease = (snapshot.to_dict() or {}).get("lease_until")
            if lease is not None and lease > now:
                return False
            transaction.update(
                reference,
                {"lease_until": now + timedelta(seconds=lease_seconds), "lease_owner": owner},
            )
            return True

        return bool(take(self.client.transaction()))

    def delete(self, document_id: str) -> None:
        parent = self.collection.document(document_id)
        for chunk in parent.collection("chunks").list_documents():
            chunk.delete()
        parent.delete()

    def count_older_than(self, age: timedelta) -> int:
        """Dead letters waiting longer than `age` (what the replay job alerts on)."""
        cutoff = datetime.now(UTC) - age
        query: Any = self.collection.where(filter=FieldFilter("created_at", "<", cutoff))
        return int(query.count().get()[0][0].value)

    def count(self) -> int:
        result = self.collection.count().get()  # type: ignore[no-untyped-call]
        return int(result[0][0].value)


def parent_chunks(parent: firestore.DocumentReference, count: int) -> list[bytes]:
    chunks = []
    for number in range(count):
        snapshot = parent.collection("chunks").document(str(number)).get()
        chunks.append(bytes((snapshot.to_dict() or {})["data"]))
    return chunks


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)  # dead letter id -> error
    skipped: list[str] = field(default_factory=list)  # held by another replay

    def summary(self) -> str:
        lines = [
            f"replayed {len(self.replayed)}, still failing {len(self.still_failing)}, "
            f"held by another replay {len(self.skipped)}"
        ]
        lines += [f"  {key}: {error}" for key, error in self.still_failing.items()]
        return "\n".join(lines)


def replay(
    store: DeadLetterStore,
    sink: Any,
    *,
    limit: int | None = None,
    owner: str = "replay",
    lease_seconds: float = 120.0,
    after_insert: Callable[[dict[str, Any]], Any] | None = None,
) -> ReplayReport:
    """Re-insert dead letters into BigQuery; delete each only once BigQuery has accepted it.

    Idempotent: a dead letter inserted but not yet deleted (a crash in between) is inserted again
    with the same insert id (the row's content hash), and the `calls` view keeps one row per
    session. Letters written by older versions are first brought to today's rules.
    `after_insert` (the caller memory update) runs for each row BigQuery took, before its letter
    is deleted; its failure never keeps a letter.
    """
    report = ReplayReport()
    for letter in store.list(limit):
        if not store.claim(letter.id, owner, lease_seconds):
            report.skipped.append(letter.id)  # another replay has it
            continue
        row = conform_stored_row({**letter.row, "source": "replay"}, datetime.now(UTC))
        try:
            errors = sink.insert([row], [insert_id(row)])
        except InsertFailed as exc:
            report.still_failing[letter.id] = str(exc)
            continue
        if errors:
            report.still_failing[letter.id] = errors[0].message
            continue
        if after_insert is not None:
            try:
                after_insert(row)
            except Exception as exc:  # the row is stored: memory is caught up from BigQuery
                log.warning("memory of a replayed call", extra={"error_type": type(exc).__name__})
        store.delete(letter.id)
        report.replayed.append(letter.id)
    return report
