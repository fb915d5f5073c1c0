"""scripts/profiles.py against the Firestore emulator."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from profiles import export_profiles, import_profiles, migrate_lookups, show_answer

from service.config import get_settings
from service.prefetch.identity import signature as lookup_signature


def documents(client: Any, collection: str = "profiles") -> dict[str, dict[str, Any]]:
    return {snap.id: snap.to_dict() for snap in client.collection(collection).stream()}


CSV = """phone,name,tier,agents,disabled,extra_prompt
+1 (555) 123-4567,John Doe,gold,agent-1;agent-2,false,Caller {name}
555.987.6543,Jane Roe,,,,
not a number,Nobody,,,,
,Empty,,,,
+15551234567,John Again,platinum,,,
07700 900123,UK national,,,maybe,
"""


def test_csv_import_normalises_numbers_and_reports_bad_rows(
    clean_firestore: Any, tmp_path: Path
) -> None:
    path = tmp_path / "callers.csv"
    path.write_text(CSV)
    report = import_profiles(clean_firestore, path, region="US")
    assert report.written == 2
    assert report.problems == [
        (2, "+15551234567 appears again on line 6; the later row wins"),
        (4, "phone is missing or not a phone number"),
        (5, "phone is missing or not a phone number"),
        (7, "disabled must be true or false"),
    ]
    assert documents(clean_firestore) == {
        "+15551234567": {"name": "John Again", "tier": "platinum"},
        "+15559876543": {"name": "Jane Roe"},
    }


def test_csv_lists_and_flags(clean_firestore: Any, tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("phone,name,agents,disabled\n+15551234567,Ann,agent-1; agent-2,TRUE\n")
    import_profiles(clean_firestore, path)
    assert documents(clean_firestore)["+15551234567"] == {
        "name": "Ann",
        "agents": ["agent-1", "agent-2"],
        "disabled": True,
    }


def test_jsonl_import_keeps_nested_maps_and_reports_bad_lines(
    clean_firestore: Any, tmp_path: Path
) -> None:
    path = tmp_path / "callers.jsonl"
    path.write_text(
        '{"phone": "+447700900123", "name": "Jane", "address": {"city": "London"}}\n'
        "{not json}\n"
        "[1, 2]\n"
        "\n"
        '{"phone": "07700 900124", "name": "National"}\n'
    )
    report = import_profiles(clean_firestore, path, region="GB")
    assert report.problems == [(2, "not valid JSON"), (3, "not a JSON object")]
    assert documents(clean_firestore) == {
        "+447700900123": {"name": "Jane", "address": {"city": "London"}},
        "+447700900124": {"name": "National"},
    }


def test_dry_run_writes_nothing(clean_firestore: Any, tmp_path: Path) -> None:
    path = tmp_path / "callers.csv"
    path.write_text(CSV)
    report = import_profiles(clean_firestore, path, dry_run=True)
    assert report.written == 2 and documents(clean_firestore) == {}


def test_reimport_is_idempotent_and_batches_past_500(clean_firestore: Any, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("phone,name\n" + "".join(f"+1555{i:07d},Caller {i}\n" for i in range(1, 1201)))
    first = import_profiles(clean_firestore, path)
    snapshot = documents(clean_firestore)
    second = import_profiles(clean_firestore, path)
    assert first.written == second.written == 1200 and not first.problems
    assert documents(clean_firestore) == snapshot and len(snapshot) == 1200


def test_import_merges_by_default_and_replaces_only_when_asked(
    clean_firestore: Any, tmp_path: Path
) -> None:
    # Fields added in the Firestore console survive a re-import of the CSV.
    clean_firestore.collection("profiles").document("+15551234567").set(
        {"name": "Old", "note": "kept", "address": {"zip": "75001"}}
    )
    path = tmp_path / "update.csv"
    path.write_text("phone,name,address.city\n+15551234567,New,Paris\n+15559876543,Bo,\n")
    report = import_profiles(clean_firestore, path, dry_run=True)
    assert report.summary(dry_run=True).startswith(
        "would write 2 profiles: 1 new, 1 existing (merged into them: their other fields stay)"
    )
    assert documents(clean_firestore)["+15551234567"]["name"] == "Old"  # a dry run writes nothing
    import_profiles(clean_firestore, path)
    assert documents(clean_firestore)["+15551234567"] == {
        "name": "New",
        "note": "kept",
        "address": {"zip": "75001", "city": "Paris"},
    }
    report = import_profiles(clean_firestore, path, replace=True)
    assert "2 existing (replaced whole)" in report.summary(dry_run=False)
    replaced = documents(clean_firestore)["+15551234567"]
    assert replaced == {"name": "New", "address": {"city": "Paris"}}


def test_csv_cells_become_maps_numbers_booleans_and_lists(
    clean_firestore: Any, tmp_path: Path
) -> None:
    path = tmp_path / "typed.csv"
    path.write_text(
        "phone,address.city,address.geo.lat,visits,balance,vip,code,line,tags,extra_prompt\n"
        '+15551234567,Paris,48.85,12,-3.5,TRUE,0042,+15550001111,"[""a"", ""b""]",42\n'
        "+15559876543,,,,,,,,[not json,\n"
        "+15550002222,x,,,,,,,,\n"
    )
    report = import_profiles(clean_firestore, path)
    assert report.problems == []
    assert documents(clean_firestore)["+15551234567"] == {
        "address": {"city": "Paris", "geo": {"lat": 48.85}},
        "visits": 12,
        "balance": -3.5,
        "vip": True,
        "code": "0042",  # a leading zero: a code, not a quantity
        "line": "+15550001111",
        "tags": ["a", "b"],
        "extra_prompt": "42",  # always text
    }
    assert documents(clean_firestore)["+15559876543"] == {"tags": "[not json"}
    clash = tmp_path / "clash.csv"
    clash.write_text("phone,address,address.city\n+15551234567,home,Paris\n")
    assert import_profiles(clean_firestore, clash).problems == [
        (2, "column 'address.city': address is both a value and a map")
    ]


def test_export_then_import_round_trips(clean_firestore: Any, tmp_path: Path) -> None:
    clean_firestore.collection("profiles").document("+15551234567").set(
        {"name": "Ann", "agents": ["a"], "address": {"city": "Paris"}, "balance": 3}
    )
    exported = io.StringIO()
    assert export_profiles(clean_firestore, exported) == 1
    before = documents(clean_firestore)
    path = tmp_path / "export.jsonl"
    path.write_text(exported.getvalue())
    clean_firestore.collection("profiles").document("+15551234567").delete()
    import_profiles(clean_firestore, path)
    assert documents(clean_firestore) == before
    as_csv = io.StringIO()
    export_profiles(clean_firestore, as_csv, fmt="csv")
    assert as_csv.getvalue().splitlines()[0] == "phone,address.city,agents,balance,name"
    # ... and the CSV imports back to the same document.
    path = tmp_path / "export.csv"
    path.write_text(as_csv.getvalue())
    clean_firestore.collection("profiles").document("+15551234567").delete()
    import_profiles(clean_firestore, path)
    assert documents(clean_firestore) == before


@pytest.mark.parametrize("params", [{}, {"campaign": "winter"}])
def test_show_prints_what_the_webhook_answers(
    make_client: Any, clean_firestore: Any, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-millis")
    clean_firestore.collection("agents").document("agent-1").set(
        {
            "company": "Acme",
            "extra_prompt": "For {company}, campaign {campaign}.",
            "caller_numbers": "phone",
        }
    )
    clean_firestore.collection("profiles").document("+15551234567").set({"name": "Ann"})
    shown = show_answer(clean_firestore, "agent-1", "+1 555 123 4567", None, params)
    query = {"agent_id": "agent-1", "session_id": "s", "from": "+15551234567", **params}
    served = make_client().get("/prefetch?" + urlencode(query)).get_json()
    assert shown["answer"] == served and shown["profile_found"] is True
    assert shown["caller_numbers"] == "phone"
    assert shown["matched"] == "profiles/+15551234567"
    if params:  # a parameter the agent does not look up by is said to be a template value only
        assert shown["params"] == {
            "campaign": "template value only (agent agent-1 has no lookup_key and "
            "PREFETCH_LOOKUP_KEY is empty)"
        }
    assert json.dumps(shown)


def test_show_says_which_lookup_parameter_answered_and_why_others_were_ignored(
    clean_firestore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-millis")
    monkeypatch.setenv("LOOKUP_SIGNING_SECRETS", '{"agent-s": "s3cret-s3cret-s3cret"}')
    get_settings.cache_clear()
    agents = clean_firestore.collection("agents")
    agents.document("agent-1").set({"lookup_key": "crm_id"})
    agents.document("agent-s").set({"lookup_key": "crm_id", "caller_numbers": "phone"})
    agents.document("agent-n").set({"lookup_key": None})
    clean_firestore.collection("profiles").document("lookup:crm_id:C-1").set({"name": "CRM"})
    clean_firestore.collection("profiles").document("+15551234567").set({"name": "Ann"})
    try:
        shown = show_answer(
            clean_firestore, "agent-1", "+15551234567", None, {"crm_id": "C-1", "x": "1"}
        )
        assert shown["matched"] == "profiles/lookup:crm_id:C-1"
        assert shown["params"] == {
            "crm_id": "lookup key: profiles/lookup:crm_id:C-1 answered",
            "x": "template value only (the lookup key of agent agent-1 is crm_id)",
        }
        unsigned = show_answer(clean_firestore, "agent-s", "+15551234567", None, {"crm_id": "C-1"})
        assert unsigned["matched"] == "profiles/+15551234567"
        assert "requires it signed (crm_id_sig)" in unsigned["params"]["crm_id"]
        off = show_answer(clean_firestore, "agent-n", None, None, {"crm_id": "C-1"})
        assert off["matched"] is None
        assert "lookup_key None is not usable" in off["params"]["crm_id"]
        missing = show_answer(clean_firestore, "nobody", None, None, {})
        assert missing["agent"] == "no document agents/nobody: no agent defaults"
    finally:
        get_settings.cache_clear()


def test_lookup_rows_and_reserved_field_problems(clean_firestore: Any, tmp_path: Path) -> None:
    path = tmp_path / "callers.jsonl"
    lines = [
        {"lookup": "crm_id:C-1001", "name": "From CRM"},
        {"lookup": "crm_id", "name": "No value"},
        {"phone": "+15551234567", "name": "Ann", "agents": "agent-x"},
        {"phone": "+15559876543", "name": "Bob", "disabled": "true"},
        {"phone": "+15550001111", "name": "Cy", "agents": ["agent-1"]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = import_profiles(clean_firestore, path, region="US")
    assert report.problems == [
        (2, "lookup must be key:value (e.g. crm_id:C-1)"),
        (3, "agents must be a list of agent ids"),
        (4, "disabled must be true or false (a boolean)"),
    ]
    assert set(documents(clean_firestore)) == {"lookup:crm_id:C-1001", "+15550001111"}


def test_show_reports_documents_that_serve_nobody(
    clean_firestore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-millis")
    clean_firestore.collection("profiles").document("+15551234567").set(
        {"name": "Ann", "agents": "agent-1"}
    )
    shown = show_answer(clean_firestore, "agent-1", "+15551234567", None, {})
    assert shown["profile_found"] is False
    assert shown["problems"] == {"+15551234567": ["agents must be a list of agent ids"]}


def test_lookup_profiles_export_and_import_back(clean_firestore: Any, tmp_path: Path) -> None:
    profiles = clean_firestore.collection("profiles")
    profiles.document("lookup:crm_id:C-1001").set({"name": "From CRM"})
    profiles.document("+15551234567").set({"name": "Ann"})
    for fmt in ("jsonl", "csv"):
        exported = io.StringIO()
        export_profiles(clean_firestore, exported, fmt=fmt)
        before = documents(clean_firestore)
        path = tmp_path / f"export.{fmt}"
        path.write_text(exported.getvalue())
        for document_id in before:
            profiles.document(document_id).delete()
        report = import_profiles(clean_firestore, path)
        assert report.problems == [], fmt
        assert documents(clean_firestore) == before, fmt


def test_migrate_lookups_moves_profiles_named_by_a_value(
    clean_firestore: Any, tmp_path: Path
) -> None:
    profiles = clean_firestore.collection("profiles")
    profiles.document("C-1001").set({"name": "Legacy", "agents": ["agent-1"]})
    profiles.document("C-2002").set({"name": "Legacy two"})
    profiles.document("lookup:crm_id:C-2002").set({"name": "Already migrated"})
    profiles.document("+15551234567").set({"name": "Phone"})
    dry = migrate_lookups(clean_firestore, "crm_id", dry_run=True)
    assert dry.moved == [("C-1001", "lookup:crm_id:C-1001")] and dry.conflicts == ["C-2002"]
    assert "C-1001" in documents(clean_firestore)
    migrate_lookups(clean_firestore, "crm_id")
    assert documents(clean_firestore) == {
        "lookup:crm_id:C-1001": {"name": "Legacy", "agents": ["agent-1"]},
        "C-2002": {"name": "Legacy two"},  # its target exists: left for a person to decide
        "lookup:crm_id:C-2002": {"name": "Already migrated"},
        "+15551234567": {"name": "Phone"},
    }


def test_show_answers_as_the_service_for_signed_lookups_and_reports_the_lookup_profile(
    clean_firestore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-millis")
    monkeypatch.setenv("LOOKUP_SIGNING_SECRETS", '{"agent-1": "a-secret"}')
    get_settings.cache_clear()
    try:
        clean_firestore.collection("agents").document("agent-1").set({"lookup_key": "crm_id"})
        profiles = clean_firestore.collection("profiles")
        profiles.document("lookup:crm_id:C-1").set({"name": "CRM"})
        profiles.document("lookup:crm_id:C-2").set({"name": "Bad", "disabled": "no"})
        unsigned = show_answer(clean_firestore, "agent-1", None, None, {"crm_id": "C-1"})
        assert unsigned["answer"] == {}  # as the service answers: the value is not signed
        signed = {"crm_id": "C-1", "crm_id_sig": lookup_signature("a-secret", "C-1")}
        assert show_answer(clean_firestore, "agent-1", None, None, signed)["profile_found"]
        shown = show_answer(clean_firestore, "agent-1", None, None, {"crm_id": "C-2"})
        assert shown["problems"] == {
            "lookup:crm_id:C-2": ["disabled must be true or false (a boolean)"]
        }
    finally:
        get_settings.cache_clear()
