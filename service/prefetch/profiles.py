"""Firestore access for caller profiles and agent defaults: one batched read, a deadline, a cache.

The only module that reads `profiles` and `agents`. Documents are converted to plain JSON-safe
values as they are read, so the cache and everything downstream hold plain data. The service reads
through service.prefetch.firestore_rest (a fraction of the client's start-up cost); scripts that
hold a google-cloud-firestore client read through ClientDocumentReader, with the same result.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.prefetch.coalescer import ReadCoalescer, ReadFailed

if TYPE_CHECKING:
    from collections.abc import Sequence


log = logging.getLogger(__name__)

Kind = Literal["profile", "agent", "memory"]
DocumentKey = tuple[Kind, str]
Document = dict[str, Any] | None  # None: the document does not exist

_DROP = object()


class DocumentReader(Protocol):
    def get_documents(
        self, paths: Sequence[tuple[str, str]], timeout: float
    ) -> dict[tuple[str, str], Document]:
        """{(collection, id): plain fields or None when missing}, in one call within `timeout`."""
        ...


def to_plain(value: Any) -> Any:
    """Firestore value -> JSON-safe value; references, bytes and non-finite numbers are dropped."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, datetime | date):  # includes Firestore's DatetimeWithNanoseconds
        return value.isoformat()
    if isinstance(value, dict):
        plain = {str(key): to_plain(item) for key, item in value.items()}
        return {key: item for key, item in plain.items() if item is not _DROP}
    if isinstance(value, list | tuple):
        return [item for item in (to_plain(entry) for entry in value) if item is not _DROP]
    if hasattr(value, "latitude") and hasattr(value, "longitude"):  # GeoPoint
        return {"latitude": value.latitude, "longitude": value.longitude}
    if hasattr(value, "to_map_value"):  # Vector
        return [float(item) for item in value]
    return _DROP  # DocumentReference, bytes and anything else without a JSON meaning


class ClientDocumentReader:
    """DocumentReader over a google-cloud-firestore client (scripts, and faults in tests)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_documents(
        self, paths: Sequence[tuple[str, str]], timeout: float
    ) -> dict[tuple[str, str], Document]:
        references = {}
        for collection, document_id in paths:
            reference = self.client.collection(collection).document(document_id)
            references[reference.path] = ((collection, document_id), reference)
        found: dict[tuple[str, str], Document] = {}
        snapshots = self.client.get_all(
            [reference for _, reference in references.values()], retry=None, timeout=timeout
        )
        for snapshot in snapshots:
            path = references[snapshot.reference.path][0]
            found[path] = to_plain(snapshot.to_dict()) if snapshot.exists else None
            if len(found) == len(references):
                # Every document has answered: stop here rather than wait for the stream's end
                # (as DocumentReference.get does).
                break
        return found


class DocumentCache:
    """LRU cache of documents: fresh entries skip Firestore, stale ones answer when it fails."""

    def __init__(
        self,
        fresh_seconds: float,
        stale_seconds: float,
        max_entries: int,
        agent_fresh_seconds: float | None = None,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        # Agent documents are configuration, read on every call of the agent: cached separately.
        self.agent_fresh_seconds = (
            fresh_seconds if agent_fresh_seconds is None else agent_fresh_seconds
        )
        self.stale_seconds = max(stale_seconds, fresh_seconds, self.agent_fresh_seconds)
        self.max_entries = max_entries
        self._entries: OrderedDict[DocumentKey, tuple[float, Document]] = OrderedDict()
        self._lock = threading.Lock()

    def fresh_for(self, key: DocumentKey) -> float:
        if key[0] == "memory":
            return 0.0  # changes with every call: a caller who rings back at once is remembered
        return self.agent_fresh_seconds if key[0] == "agent" else self.fresh_seconds

    def get(self, key: DocumentKey, max_age: float) -> tuple[bool, Document]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] > max_age:
                return False, None
            self._entries.move_to_end(key)
            return True, entry[1]

    def put(self, key: DocumentKey, document: Document) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic(), document)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


@dataclass
class ReadResult:
    documents: dict[DocumentKey, Document] = field(default_factory=dict)
    from_cache: int = 0
    failure: str = ""  # "timeout" or the exception type when Firestore did not answer


class ProfileStore:
    def __init__(
        self,
        reader: DocumentReader,
        *,
        profiles_collection: str,
        agents_collection: str,
        cache: DocumentCache,
        max_concurrent_reads: int = 1,
    ) -> None:
        self.reader = reader
        self.collections: dict[Kind, str] = {
            "profile": profiles_collection,
            "agent": agents_collection,
            # Caller memory lives below the profiles: ids are `<caller>/memory/<scope>`.
            "memory": profiles_collection,
        }
        self.cache = cache
        self.reads: ReadCoalescer[DocumentKey, Document] = ReadCoalescer(
            self._get_all, max_concurrent_reads
        )

    def warm_up(self, timeout: float) -> bool:
        """Open the connection before the first caller needs it: credentials and TLS would
        otherwise be paid inside the first prefetch's deadline. One read of a
        document that does not exist, bounded by `timeout`; a failure is logged, never fatal
        (the first prefetch then pays, as before)."""
        try:
            self._get_all([("agent", "_warm_up")], timeout)
        except Exception as exc:
            log.warning("firestore warm-up failed", extra={"error_type": type(exc).__name__})
            return False
        return True

    def last_known(self, key: DocumentKey) -> Document:
        """The cached document, however old (within the stale window), without any I/O."""
        return self.cache.get(key, self.cache.stale_seconds)[1]

    def last_known_entry(self, key: DocumentKey) -> tuple[bool, Document]:
        """(whether the cache knows the document, the document or None when it does not exist),
        however old within the stale window, without any I/O."""
        return self.cache.get(key, self.cache.stale_seconds)

    def read(self, keys: Iterable[DocumentKey], timeout: float) -> ReadResult:
        """Read documents in one round trip; answer within `timeout` seconds whatever happens.

        The read runs in the request's thread with a deadline of `timeout` for the whole call
        (a thread hand-off per request cost about a quarter of a millisecond and a tenth of the
        throughput in bench/prefetch.py).
        Requests that arrive while a read is in flight share the next one
        (service/prefetch/coalescer.py).
        One batchGet for every document, even a single one: the unary GetDocument was cheaper for
        documents that exist but made a missing one (a fifth of callers) cost the emulator three
        times as much, and tripled p99 in bench/prefetch.py (measured over gRPC).
        """
        result = ReadResult()
        missing: list[DocumentKey] = []
        for key in dict.fromkeys(keys):
            hit, document = self.cache.get(key, self.cache.fresh_for(key))
            if hit:
                result.documents[key] = document
                result.from_cache += 1
            else:
                missing.append(key)
        if not missing:
            return result
        try:  # no time left is the coalescer's to answer, like any other timeout
            fetched = self.reads.read(missing, timeout)
        except ReadFailed as exc:  # any Firestore failure degrades to the cache, never to a 5xx
            result.failure = exc.reason
        else:
            for key in missing:
                document = fetched.get(key)
                self.cache.put(key, document)
                result.documents[key] = document
            return result
        for key in missing:  # what neither Firestore nor the cache has stays absent
            hit, document = self.cache.get(key, self.cache.stale_seconds)
            if hit:
                result.documents[key] = document
                result.from_cache += 1
        return result

    def _get_all(self, keys: list[DocumentKey], timeout: float) -> dict[DocumentKey, Document]:
        paths = {
            (self.collections[kind], document_id): (kind, document_id) for kind, document_id in keys
        }
        documents = self.reader.get_documents(list(paths), timeout)
        return {paths[path]: document for path, document in documents.items() if path in paths}
