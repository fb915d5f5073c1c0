"""Who is calling (service/prefetch/identity.py), through HTTP into the Firestore emulator: a web
caller cannot name a number, no parameter's first value wins, numbers count only where the agent
says so, and a disabled agent looks nothing up (issue 20, point 8)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from service.prefetch.identity import signature
from service.prefetch.profiles import DocumentCache, ProfileStore
from tests.integration.prefetch.test_prefetch import SwitchableReader

AGENT = "agent-1"
VICTIM = "+15551234567"
CALLER = "+15550009999"


def put(firestore: Any, collection: str, document_id: str, fields: dict[str, Any]) -> None:
    firestore.collection(collection).document(document_id).set(fields)


def prefetch(client: Any, *pairs: tuple[str, str]) -> Any:
    """GET /prefetch with these (name, value) pairs, repeats kept, in this order."""
    names = {name for name, _ in pairs}
    defaults = [(n, v) for n, v in (("agent_id", AGENT), ("session_id", "s")) if n not in names]
    return client.get("/prefetch?" + urlencode([*defaults, *pairs]))


@pytest.fixture
def victim(clean_firestore: Any) -> Any:
    put(clean_firestore, "profiles", VICTIM, {"name": "Victim", "balance": 900})
    return clean_firestore


def test_by_default_a_web_caller_naming_a_number_gets_nobodys_profile(
    make_client: Any, victim: Any
) -> None:
    # A web call carries no number of its own: its metadata `from` is whatever the visitor typed.
    put(victim, "agents", AGENT, {"company": "Acme"})
    answer = prefetch(make_client(), ("from", VICTIM)).get_json()
    assert answer == {"metadata": {"company": "Acme"}}
    # An agent without a document, too.
    assert prefetch(make_client(), ("agent_id", "no-document"), ("to", VICTIM)).get_json() == {}


def test_a_phone_only_agent_finds_callers_by_number(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"company": "Acme", "caller_numbers": "phone"})
    answer = prefetch(make_client(), ("from", VICTIM), ("to", CALLER)).get_json()
    assert answer == {"metadata": {"company": "Acme", "name": "Victim", "balance": 900}}


def test_the_agent_setting_wins_over_the_deployment_default(make_client: Any, victim: Any) -> None:
    client = make_client(prefetch_caller_numbers="phone")
    assert prefetch(client, ("from", VICTIM)).get_json()["metadata"]["name"] == "Victim"
    put(victim, "agents", AGENT, {"caller_numbers": "off"})
    assert prefetch(make_client(prefetch_caller_numbers="phone"), ("from", VICTIM)).get_json() == {}


def test_signed_numbers_count_only_with_a_valid_signature(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"caller_numbers": "signed"})
    client = make_client(lookup_signing_secrets={AGENT: ["new", "old"]})
    good = signature("old", VICTIM)  # a secret being rotated out still counts
    for wrong in ("", "0" * 64, signature("other", VICTIM), signature("new", CALLER), good[:-1]):
        assert prefetch(client, ("from", VICTIM), ("from_sig", wrong)).get_json() == {}
    assert prefetch(client, ("from", VICTIM)).get_json() == {}  # unsigned
    answer = prefetch(client, ("from", VICTIM), ("from_sig", good.upper())).get_json()
    assert answer["metadata"]["name"] == "Victim"


def test_signed_numbers_without_a_secret_find_nobody(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"caller_numbers": "signed"})
    answer = prefetch(make_client(), ("from", VICTIM), ("from_sig", signature("", VICTIM)))
    assert answer.get_json() == {}


@pytest.mark.parametrize("first", [VICTIM, CALLER])
def test_a_number_sent_twice_with_different_values_is_nobodys(
    make_client: Any, victim: Any, first: str
) -> None:
    # Millis does not document the order of its own `from` and a metadata `from`: neither wins.
    put(victim, "agents", AGENT, {"caller_numbers": "phone"})
    put(victim, "profiles", CALLER, {"name": "Caller"})
    other = CALLER if first == VICTIM else VICTIM
    assert prefetch(make_client(), ("from", first), ("from", other)).get_json() == {}
    # The same value twice is not ambiguous.
    answer = prefetch(make_client(), ("from", VICTIM), ("from", VICTIM)).get_json()
    assert answer["metadata"]["name"] == "Victim"


@pytest.mark.parametrize("name", ["agent_id", "session_id"])
def test_agent_or_session_sent_twice_with_different_values_is_refused(
    make_client: Any, name: str
) -> None:
    response = prefetch(make_client(), (name, "one"), (name, "two"))
    assert response.status_code == 400
    assert response.get_json()["error"] == "ambiguous_parameter"
    assert name in response.get_json()["message"]


def test_a_lookup_value_or_signature_sent_twice_is_ignored(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"lookup_key": "crm_id"})
    put(victim, "profiles", "lookup:crm_id:C-1", {"name": "From CRM"})
    client = make_client()
    assert prefetch(client, ("crm_id", "C-1")).get_json()["metadata"]["name"] == "From CRM"
    assert prefetch(client, ("crm_id", "C-1"), ("crm_id", "C-2")).get_json() == {}
    client = make_client(lookup_signing_secrets={AGENT: ["s"]})
    good = signature("s", "C-1")
    assert prefetch(client, ("crm_id", "C-1"), ("crm_id_sig", good)).get_json() != {}
    pairs = [("crm_id", "C-1"), ("crm_id_sig", good), ("crm_id_sig", "0" * 64)]
    assert prefetch(client, *pairs).get_json() == {}


def test_metadata_values_sent_twice_fill_no_template(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"extra_prompt": "Campaign {campaign}."})
    client = make_client()
    assert prefetch(client, ("campaign", "a")).get_json()["extra_prompt"] == "Campaign a."
    answer = prefetch(client, ("campaign", "a"), ("campaign", "b")).get_json()
    assert answer["extra_prompt"] == "Campaign {campaign}."


class RecordingReader(SwitchableReader):
    """The real emulator through the service's REST reader, recording which documents each
    request read (instrumentation, not a fake)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[tuple[str, str]]] = []

    def get_documents(self, paths: Any, timeout: float) -> Any:
        self.reads.append(list(paths))
        return super().get_documents(paths, timeout)


def store_for(reader: Any) -> ProfileStore:
    return ProfileStore(
        reader,
        profiles_collection="profiles",
        agents_collection="agents",
        # Agents cached as deployed (the profile cache off, so every profile read shows).
        cache=DocumentCache(0, 600, 100, agent_fresh_seconds=60),
    )


def test_a_disabled_agent_answers_nothing_and_looks_nothing_up(
    make_client: Any, victim: Any
) -> None:
    put(
        victim,
        "agents",
        AGENT,
        {"company": "Acme", "disabled": True, "caller_numbers": "phone", "lookup_key": "crm_id"},
    )
    put(victim, "profiles", "lookup:crm_id:C-1", {"name": "From CRM"})
    reader = RecordingReader()
    client = make_client(profile_store=store_for(reader), prefetch_caller_numbers="phone")
    for _ in range(3):
        response = prefetch(client, ("from", VICTIM), ("crm_id", "C-1"))
        assert (response.status_code, response.get_json()) == (200, {})
    # Once the agent is known to be disabled, not even a profile document is read.
    read_after_first = [path for paths in reader.reads[1:] for path in paths]
    assert all(collection == "agents" for collection, _ in read_after_first)


def test_an_agent_turned_off_then_on_again_serves_again(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"caller_numbers": "phone", "disabled": True})
    client = make_client(agent_cache_ttl_seconds=0)
    assert prefetch(client, ("from", VICTIM)).get_json() == {}
    put(victim, "agents", AGENT, {"caller_numbers": "phone", "disabled": False})
    assert prefetch(client, ("from", VICTIM)).get_json()["metadata"]["name"] == "Victim"


@pytest.mark.parametrize("setting", ["yes", True, None, ["phone"], "PHONE"])
def test_caller_numbers_of_the_wrong_type_serves_nothing(
    make_client: Any, victim: Any, setting: Any
) -> None:
    put(victim, "agents", AGENT, {"company": "Acme", "caller_numbers": setting})
    answer = prefetch(make_client(prefetch_caller_numbers="phone"), ("from", VICTIM))
    assert answer.get_json() == {}


def test_a_phone_agents_first_call_is_still_one_round_trip(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"caller_numbers": "phone"})
    reader = RecordingReader()
    client = make_client(profile_store=store_for(reader))
    answer = prefetch(client, ("from", VICTIM)).get_json()
    assert answer["metadata"]["name"] == "Victim" and len(reader.reads) == 1


def test_the_caller_numbers_setting_is_not_returned_as_data(make_client: Any, victim: Any) -> None:
    put(victim, "agents", AGENT, {"company": "Acme", "caller_numbers": "phone"})
    answer = prefetch(make_client(), ("from", CALLER)).get_json()
    assert answer == {"metadata": {"company": "Acme"}}
