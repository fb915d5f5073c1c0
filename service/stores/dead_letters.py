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
from collections.abc import Callable, Iterator, Sequence
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
    chunk_count: int = 0


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

    def page(self, after: Any = None, size: int = 200) -> tuple[list[DeadLetter], Any]:
        """The `size` oldest dead letters after the cursor `after` (None: from the oldest), and
        the cursor of this page. One short request per page: no query stream stays open while
        the caller works (a stream held past its deadline breaks google-cloud-firestore's resume,
        googleapis/python-firestore#596)."""
        query = self.collection.order_by("created_at").limit(size)
        if after is not None:
            query = query.start_after(after)
        snapshots = query.get(retry=self._retry(60), timeout=60)
        return [self._letter(snapshot) for snapshot in snapshots], (
            snapshots[-1] if snapshots else after
        )

    def list(self, limit: int | None = None, page_size: int = 200) -> Iterator[DeadLetter]:
        """Every dead letter, oldest first, read page by page."""
        after, seen = None, 0
        while limit is None or seen < limit:
            size = page_size if limit is None else min(page_size, limit - seen)
            letters, after = self.page(after, size)
            yield from letters
            seen += len(letters)
            if len(letters) < size:
                return

    @staticmethod
    def _letter(snapshot: Any) -> DeadLetter:
        data = snapshot.to_dict() or {}
        if "payload" in data:
            compressed = bytes(data["payload"])
        else:
            chunks = parent_chunks(snapshot.reference, int(data.get("chunk_count", 0)))
            compressed = b"".join(chunks)
        return DeadLetter(
            id=snapshot.id,
            session_id=data.get("session_id", ""),
            reason=data.get("reason", ""),
            error=data.get("error", ""),
            created_at=data.get("created_at"),
            row=json.loads(zlib.decompress(compressed)),
            chunk_count=int(data.get("chunk_count", 0)),
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

    def claim_many(self, document_ids: Sequence[str], owner: str, lease_seconds: float) -> set[str]:
        """claim() for a page of letters in one transaction (at most 500, Firestore's limit of
        writes per transaction): the ids taken."""
        references = [self.collection.document(document_id) for document_id in document_ids]
        now = datetime.now(UTC)

        @firestore.transactional
        def take(transaction: firestore.Transaction) -> set[str]:
            free = []
            for snapshot in transaction.get_all(references):
                lease = (snapshot.to_dict() or {}).get("lease_until") if snapshot.exists else None
                if snapshot.exists and (lease is None or lease <= now):
                    free.append(snapshot.reference)
            for reference in free:
                transaction.update(
                    reference,
                    {"lease_until": now + timedelta(seconds=lease_seconds), "lease_owner": owner},
                )
            return {reference.id for reference in free}

        return set(take(self.client.transaction()))

    def delete_many(self, letters: Sequence[DeadLetter]) -> None:
        """Delete replayed letters (and their chunks) in batches of at most 500 writes."""
        references = []
        for letter in letters:
            parent = self.collection.document(letter.id)
            references += [
                parent.collection("chunks").document(str(n)) for n in range(letter.chunk_count)
            ]
            references.append(parent)  # last: a parent that exists is complete
        for start in range(0, len(references), 500):
            batch = self.client.batch()
            for reference in references[start : start + 500]:
                batch.delete(reference)
            batch.commit()

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
    pages: int = 0
    # Why the run ended before the last letter: "" (it did not), "time budget", "bigquery failing"
    stopped: str = ""

    def summary(self) -> str:
        lines = [
            f"replayed {len(self.replayed)}, still failing {len(self.still_failing)}, "
            f"held by another replay {len(self.skipped)}, in {self.pages} pages"
            + (f"; stopped early: {self.stopped}" if self.stopped else "")
        ]
        lines += [f"  {key}: {error}" for key, error in list(self.still_failing.items())[:20]]
        if len(self.still_failing) > 20:
            lines.append(f"  ... and {len(self.still_failing) - 20} more")
        return "\n".join(lines)


def replay(
    store: DeadLetterStore,
    sink: Any,
    *,
    limit: int | None = None,
    owner: str = "replay",
    lease_seconds: float = 120.0,
    page_size: int = 200,
    max_seconds: float | None = None,
    progress: Callable[[ReplayReport], None] | None = None,
    after_insert: Callable[[dict[str, Any]], Any] | None = None,
) -> ReplayReport:
    """Re-insert dead letters into BigQuery; delete each only once BigQuery has accepted it.

    Page by page (oldest first, `page_size` letters, a cursor between pages): the page is leased,
    inserted in one request and deleted in batches; `progress` is called after each page. The run
    ends at the last letter, at `limit` letters, when `max_seconds` have passed (no new page
    starts after), or when BigQuery refuses a page (an outage: the next scheduled run retries).

    Idempotent: a dead letter inserted but not yet deleted (a crash in between) is inserted again
    with the same insert id (the row's content hash), and the `calls` view keeps one row per
    session. Letters written by older versions are first brought to today's rules.
    `after_insert` (the caller memory update) runs for each row BigQuery took, before its letter
    is deleted; its failure never keeps a letter.
    """
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    report = ReplayReport()
    after, seen = None, 0
    while limit is None or seen < limit:
        if deadline is not None and time.monotonic() >= deadline:
            report.stopped = "time budget"
            break
        size = min(page_size, 500) if limit is None else min(page_size, 500, limit - seen)
        letters, after = store.page(after, size)
        if not letters:
            break
        seen += len(letters)
        report.pages += 1
        taken = store.claim_many([letter.id for letter in letters], owner, lease_seconds)
        report.skipped += [letter.id for letter in letters if letter.id not in taken]
        claimed = [letter for letter in letters if letter.id in taken]
        failed = bool(claimed) and _replay_page(claimed, store, sink, report, after_insert)
        if progress is not None:
            progress(report)
        if failed:
            report.stopped = "bigquery failing"
            break
        if len(letters) < size:
            break
    return report


def _replay_page(
    letters: list[DeadLetter],
    store: DeadLetterStore,
    sink: Any,
    report: ReplayReport,
    after_insert: Callable[[dict[str, Any]], Any] | None = None,
) -> bool:
    """Insert one page's letters; True when BigQuery failed (not a refused row: an outage)."""
    now = datetime.now(UTC)
    rows = [conform_stored_row({**letter.row, "source": "replay"}, now) for letter in letters]
    pending = list(range(len(letters)))  # indexes still to send
    stored: list[int] = []
    outage = False
    # Two rounds at most: insertAll refuses a whole request that holds an invalid row, listing
    # the other rows as "stopped" (not stored); they are sent again without it. (The Storage
    # Write sink re-sends them itself and lists only the invalid rows.)
    for _ in range(2):
        if not pending:
            break
        try:
            errors = sink.insert([rows[i] for i in pending], [insert_id(rows[i]) for i in pending])
        except InsertFailed as exc:
            report.still_failing.update({letters[i].id: str(exc) for i in pending})
            outage = True
            break
        refused = {pending[error.index]: error.message for error in errors}
        stored += [i for i in pending if i not in refused]
        pending = [i for i, message in refused.items() if message.startswith("stopped")]
        report.still_failing.update(
            {letters[i].id: message for i, message in refused.items() if i not in pending}
        )
    report.still_failing.update({letters[i].id: "stopped twice" for i in pending})
    if after_insert is not None:
        for i in stored:
            try:
                after_insert(rows[i])
            except Exception as exc:  # the row is stored: memory is caught up from BigQuery
                log.warning("memory of a replayed call", extra={"error_type": type(exc).__name__})
    store.delete_many([letters[i] for i in stored])
    report.replayed += [letters[i].id for i in stored]
    return outage
