"""ReadCoalescer: concurrent reads share one call, each caller keeps its own deadline.

The store here is a controllable function (it blocks until released, or raises) so that the
interleavings are deterministic; the same coalescer against the Firestore emulator is tested in
tests/integration/prefetch/test_prefetch.py.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from service.prefetch.coalescer import ReadCoalescer, ReadFailed


class BlockingStore:
    """Answers each key with its upper-case form; every call waits until `release` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float, int]] = []  # keys, timeout, thread
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_with: Exception | None = None

    def fetch(self, keys: list[str], timeout: float) -> dict[str, str]:
        self.calls.append((keys, timeout, threading.get_ident()))
        self.entered.set()
        self.release.wait(5)
        if self.fail_with is not None:
            raise self.fail_with
        return {key: key.upper() for key in keys}


def wait_until(condition: Any, timeout: float = 5) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, "condition not reached"
        time.sleep(0.001)


def queued(coalescer: ReadCoalescer[str, str]) -> int:
    return len(coalescer._queue)


def test_a_lone_read_goes_at_once_in_the_callers_thread() -> None:
    store = BlockingStore()
    store.release.set()
    coalescer = ReadCoalescer(store.fetch)
    assert coalescer.read(["a", "b"], timeout=1) == {"a": "A", "b": "B"}
    [(keys, timeout, thread)] = store.calls
    assert keys == ["a", "b"] and 0 < timeout <= 1 and thread == threading.get_ident()


def test_reads_arriving_during_a_call_share_the_next_one() -> None:
    store = BlockingStore()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(store.fetch)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(coalescer.read, ["a"], 5)
        assert store.entered.wait(5)
        later = [pool.submit(coalescer.read, [key, "shared"], 5) for key in "bcdef"]
        wait_until(lambda: queued(coalescer) == 5)
        store.release.set()
        assert first.result(5) == {"a": "A"}
        answers = [future.result(5) for future in later]
    # one call for the first read, one for the five that queued behind it
    assert [keys for keys, _, _ in store.calls] == [["a"], ["b", "shared", "c", "d", "e", "f"]]
    for key, answer in zip("bcdef", answers, strict=True):
        assert answer[key] == key.upper() and answer["shared"] == "SHARED"
    assert queued(coalescer) == 0 and coalescer._in_flight == 0


def test_a_queued_read_gives_up_at_its_own_deadline() -> None:
    store = BlockingStore()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(store.fetch)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(coalescer.read, ["a"], 5)
        assert store.entered.wait(5)
        started = time.monotonic()
        with pytest.raises(ReadFailed) as failure:
            coalescer.read(["b"], timeout=0.05)
        assert time.monotonic() - started < 1
        assert failure.value.reason == "TimeoutError"
        assert queued(coalescer) == 0  # it left the queue: the next batch will not read "b"
        store.release.set()
        assert slow.result(5) == {"a": "A"}
    assert coalescer.read(["c"], timeout=1) == {"c": "C"}  # nothing is stuck
    assert [keys for keys, _, _ in store.calls] == [["a"], ["c"]]


def test_a_failed_call_fails_every_read_in_it_and_the_next_read_goes_through() -> None:
    store = BlockingStore()
    store.fail_with = ConnectionError("store down")
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(store.fetch)
    with ThreadPoolExecutor(4) as pool:
        futures: list[Future[dict[str, str]]] = [pool.submit(coalescer.read, ["a"], 5)]
        assert store.entered.wait(5)
        futures += [pool.submit(coalescer.read, [key], 5) for key in "bc"]
        wait_until(lambda: queued(coalescer) == 2)
        store.release.set()
        for future in futures:
            with pytest.raises(ReadFailed) as failure:
                future.result(5)
            assert failure.value.reason == "ConnectionError"
    store.fail_with = None
    assert coalescer.read(["d"], timeout=1) == {"d": "D"}


def test_the_call_never_outlives_the_oldest_callers_deadline() -> None:
    store = BlockingStore()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(store.fetch)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(coalescer.read, ["a"], 5)
        assert store.entered.wait(5)
        oldest = pool.submit(coalescer.read, ["b"], 2)
        wait_until(lambda: queued(coalescer) == 1)
        newest = pool.submit(coalescer.read, ["c"], 5)
        wait_until(lambda: queued(coalescer) == 2)
        store.release.set()
        assert first.result(5) and oldest.result(5) and newest.result(5)
    (_, first_timeout, _), (keys, batch_timeout, _) = store.calls
    assert keys == ["b", "c"]
    assert first_timeout <= 5 and batch_timeout <= 2  # the oldest queued read sent the batch


def test_up_to_max_in_flight_reads_go_at_once_and_later_ones_queue() -> None:
    store = BlockingStore()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(store.fetch, max_in_flight=2)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(coalescer.read, [key], 5) for key in "ab"]
        wait_until(lambda: len(store.calls) == 2)  # both went without waiting for the other
        futures += [pool.submit(coalescer.read, [key], 5) for key in "cd"]
        wait_until(lambda: queued(coalescer) == 2)
        store.release.set()
        for key, future in zip("abcd", futures, strict=True):
            assert future.result(5)[key] == key.upper()
    assert sorted(keys for keys, _, _ in store.calls[:2]) == [["a"], ["b"]]
    # the two queued reads went when the first two returned (together, or one each)
    assert sorted(key for keys, _, _ in store.calls[2:] for key in keys) == ["c", "d"]
    assert coalescer._in_flight == 0
