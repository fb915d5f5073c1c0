"""The circuit breaker in front of BigQuery: fail fast while BigQuery is failing, probe now and
then, close when it answers. BigQuery is a fault-injecting fake here; the served-port test is in
tests/integration/stores/test_breaker_served.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from service.stores.breaker import BreakerSink, CircuitOpen
from service.stores.errors import InsertFailed, RowError


class FlakyBigQuery:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.row_errors: list[RowError] = []

    def insert(self, rows: Any, row_ids: Any) -> list[RowError]:
        self.calls += 1
        if self.down:
            raise InsertFailed("ServiceUnavailable: 503")
        return self.row_errors


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_after_three_failures_inserts_fail_at_once_without_calling_bigquery() -> None:
    bigquery, clock = FlakyBigQuery(), Clock()
    breaker = BreakerSink(bigquery, failures=3, probe_seconds=5, clock=clock)
    bigquery.down = True
    for _ in range(3):
        with pytest.raises(InsertFailed):
            breaker.insert([{}], ["id"])
    assert breaker.is_open
    for _ in range(10):
        with pytest.raises(CircuitOpen):
            breaker.insert([{}], ["id"])
    assert bigquery.calls == 3


def test_one_probe_per_interval_and_the_circuit_closes_when_bigquery_answers() -> None:
    bigquery, clock = FlakyBigQuery(), Clock()
    breaker = BreakerSink(bigquery, failures=2, probe_seconds=5, clock=clock)
    bigquery.down = True
    for _ in range(2):
        with pytest.raises(InsertFailed):
            breaker.insert([{}], ["id"])
    clock.now += 5
    with pytest.raises(InsertFailed) as probe:
        breaker.insert([{}], ["id"])  # the probe goes to BigQuery, which is still down
    assert not isinstance(probe.value, CircuitOpen)
    assert bigquery.calls == 3
    clock.now += 4.9
    with pytest.raises(CircuitOpen):  # the next probe is not due yet
        breaker.insert([{}], ["id"])
    clock.now += 0.1
    bigquery.down = False
    assert breaker.insert([{}], ["id"]) == []
    assert not breaker.is_open
    assert breaker.insert([{}], ["id"]) == []
    assert bigquery.calls == 5


def test_while_a_probe_is_out_other_calls_do_not_wait_for_it() -> None:
    release, entered = threading.Event(), threading.Event()

    class SlowProbe(FlakyBigQuery):
        def insert(self, rows: Any, row_ids: Any) -> list[RowError]:
            entered.set()
            release.wait(5)
            return []

    clock = Clock()
    breaker = BreakerSink(FlakyBigQuery(), failures=1, probe_seconds=1, clock=clock)
    breaker.sink.down = True  # type: ignore[attr-defined]
    with pytest.raises(InsertFailed):
        breaker.insert([{}], ["id"])
    breaker.sink = SlowProbe()
    clock.now += 1
    probe = threading.Thread(target=breaker.insert, args=([{}], ["id"]))
    probe.start()
    assert entered.wait(5)
    with pytest.raises(CircuitOpen):
        breaker.insert([{}], ["id"])
    release.set()
    probe.join(5)
    assert not breaker.is_open


def test_rows_refused_as_invalid_are_an_answer_not_an_outage() -> None:
    bigquery = FlakyBigQuery()
    bigquery.row_errors = [RowError(0, "invalid: bad value")]
    breaker = BreakerSink(bigquery, failures=1, probe_seconds=60, clock=Clock())
    for _ in range(5):
        assert breaker.insert([{}], ["id"]) == bigquery.row_errors
    assert not breaker.is_open


def test_a_success_between_failures_starts_the_count_again() -> None:
    bigquery = FlakyBigQuery()
    breaker = BreakerSink(bigquery, failures=3, probe_seconds=60, clock=Clock())
    for down in (True, True, False, True, True):
        bigquery.down = down
        if down:
            with pytest.raises(InsertFailed):
                breaker.insert([{}], ["id"])
        else:
            breaker.insert([{}], ["id"])
    assert not breaker.is_open


def test_while_an_insert_hangs_past_slow_seconds_new_calls_are_not_attempted() -> None:
    release, entered = threading.Event(), threading.Event()

    class Hanging(FlakyBigQuery):
        def insert(self, rows: Any, row_ids: Any) -> list[RowError]:
            self.calls += 1
            if self.calls == 1:
                entered.set()
                release.wait(5)
            return []

    clock, bigquery = Clock(), Hanging()
    breaker = BreakerSink(bigquery, failures=3, probe_seconds=5, slow_seconds=2, clock=clock)
    hung = threading.Thread(target=breaker.insert, args=([{}], ["id"]))
    hung.start()
    assert entered.wait(5)
    clock.now += 1.9
    assert breaker.insert([{}], ["id"]) == []  # not yet slow: attempted
    clock.now += 0.2
    with pytest.raises(CircuitOpen):
        breaker.insert([{}], ["id"])
    release.set()
    hung.join(5)
    assert breaker.insert([{}], ["id"]) == []  # the hung insert answered: attempted again
    assert bigquery.calls == 3
