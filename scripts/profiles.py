#!/usr/bin/env python3
"""Manage caller profiles: import from CSV or JSON Lines, export, and show what the prefetch
webhook would answer.

    ./scripts/profiles.py import callers.csv [--dry-run] [--replace] [--region GB]
    ./scripts/profiles.py export [--format jsonl|csv] [--output FILE]
    ./scripts/profiles.py show --agent AGENT_ID [--from NUMBER] [--to NUMBER] [--param k=v]
    ./scripts/profiles.py migrate-lookups --key crm_id [--dry-run]

Works on the stack of ./scripts/dev, or on Google Cloud when GOOGLE_CLOUD_PROJECT is set; reads
the service's settings (FIRESTORE_DATABASE, PROFILES_COLLECTION, AGENTS_COLLECTION,
DEFAULT_PHONE_REGION).

Import: one row per caller. The `phone` column (or --id-column) holds the number, normalised to
E.164 (the document id); or, for a profile found by an agent's lookup key instead, a `lookup`
column holds `key:value` (e.g. `crm_id:C-1001`, document `lookup:crm_id:C-1001`). Every other
non-empty cell becomes a field, **merged** into the existing document: fields you added in the
Firestore console stay (--replace replaces whole documents instead). In CSV:
  - a column `address.city` becomes the field `city` inside the map `address`;
  - `true`/`false` become booleans, whole numbers (no leading zero) and decimals become numbers,
    a cell holding a JSON array (`["a", "b"]`) becomes an array; everything else stays text
    (`+1555...`, `0042`, `12 Main St`); to force text, use JSON Lines;
  - `agents` is a semicolon-separated list of agent ids, `disabled` is true/false.
In JSON Lines each line is an object with a `phone` (or `lookup`) key; values keep their JSON
types. Reserved fields of the wrong type (which the webhook treats as "serve to nobody"), bad
rows and repeated numbers (the later row wins) are reported with their line numbers and skipped.
Re-running the same file writes the same documents.

Export writes lookup profiles with a `lookup` column (`crm_id:C-1001`) and maps as dotted
columns, so an export imports back.

Show prints what the webhook would answer for this call, which document answered, and why each
--param was used or ignored.

migrate-lookups: before lookup profiles had their own namespace, a lookup value named the document
directly (`profiles/C-1001`). Such documents (ids that are neither E.164 numbers nor `lookup:...`)
are moved to `lookup:<key>:<id>` for the given key; an existing target is never overwritten
(reported instead). Run it once per deployment that used lookup keys, before or right after
deploying the new service: until then those profiles are not found (never someone else's).

Exit codes: 0 done; 1 done, with rows or documents reported; 2 could not run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

from service.config import get_settings
from service.memory.settings import memory_problems
from service.prefetch.answer import (
    LOOKUP_KEY,
    LOOKUP_PREFIX,
    PrefetchRequest,
    PrefetchService,
    lookup_document_id,
    normalise_phone,
    reserved_field_problems,
    safe_document_id,
)
from service.prefetch.identity import SIGNATURE_SUFFIX, caller_numbers_mode, signed
from service.prefetch.profiles import ClientDocumentReader, DocumentCache, ProfileStore, to_plain
from service.stores.firestore import make_client as firestore_client

BATCH_SIZE = 500  # Firestore's limit of writes per batch
PROFILE_TEXT_FIELDS = ("extra_prompt",)  # always text, even when it looks like a number


@dataclass
class ImportReport:
    written: int = 0
    existing: int = 0  # of the written, documents that existed already
    replace: bool = False
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def summary(self, dry_run: bool) -> str:
        verb = "would write" if dry_run else "wrote"
        how = "replaced whole" if self.replace else "merged into them: their other fields stay"
        lines = [
            f"{verb} {self.written} profiles: {self.written - self.existing} new, "
            f"{self.existing} existing ({how}); {len(self.problems)} rows reported"
        ]
        lines += [f"  line {line}: {reason}" for line, reason in self.problems]
        return "\n".join(lines)


_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")


def csv_value(text: str) -> Any:
    """A CSV cell as people mean it: booleans, numbers and JSON arrays typed, the rest text.

    Numbers with a leading zero or a sign other than `-` (`0042`, `+1555...`) stay text: they are
    codes and phone numbers, not quantities."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    if text.startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, list):
                return value
    return text


def _nest(flat: dict[str, Any]) -> dict[str, Any] | str:
    """`address.city` columns -> {"address": {"city": ...}}; a reason when names collide."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        if not all(parents) or not leaf:
            return f"column {name!r}: empty part in a dotted name"
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                return f"column {name!r}: {parent} is both a value and a map"
        if isinstance(target.get(leaf), dict):
            return f"column {name!r}: {leaf} is both a value and a map"
        target[leaf] = value
    return nested


def _csv_rows(
    handle: TextIO, id_columns: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(handle)
    for row in reader:
        if None in row:
            yield reader.line_num, "more cells than header columns"
            continue
        cells = {
            key: value.strip() for key, value in row.items() if key and value and value.strip()
        }
        fields: dict[str, Any] = {}
        for key, value in cells.items():
            if key in id_columns or key in PROFILE_TEXT_FIELDS:
                fields[key] = value
            elif key == "agents":
                fields[key] = [agent.strip() for agent in value.split(";") if agent.strip()]
            else:
                fields[key] = csv_value(value)
        if "disabled" in fields and not isinstance(fields["disabled"], bool):
            yield reader.line_num, "disabled must be true or false"
            continue
        nested = _nest(fields)
        if isinstance(nested, str):
            yield reader.line_num, nested
            continue
        yield reader.line_num, nested


def _jsonl_rows(handle: TextIO) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            yield number, "not valid JSON"
            continue
        yield (number, value) if isinstance(value, dict) else (number, "not a JSON object")


def read_profiles(
    path: Path, id_column: str, region: str
) -> tuple[dict[str, dict[str, Any]], ImportReport]:
    """E.164 number -> fields, and the rows that could not be used."""
    report = ImportReport()
    profiles: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = (
            _jsonl_rows(handle)
            if path.suffix in (".jsonl", ".ndjson")
            else _csv_rows(handle, (id_column, "lookup"))
        )
        for line, row in rows:
            if isinstance(row, str):
                report.problems.append((line, row))
                continue
            lookup = row.pop("lookup", None)
            raw = row.pop(id_column, None)
            if lookup not in (None, ""):
                number = _lookup_id(str(lookup))
                if number is None:
                    report.problems.append((line, "lookup must be key:value (e.g. crm_id:C-1)"))
                    continue
            else:
                number = normalise_phone(str(raw), region) if raw not in (None, "") else None
            if number is None:
                report.problems.append((line, f"{id_column} is missing or not a phone number"))
                continue
            problems = reserved_field_problems(row)
            if problems:
                report.problems.append((line, "; ".join(problems)))
                continue
            if number in first_line:
                report.problems.append(
                    (
                        first_line[number],
                        f"{number} appears again on line {line}; the later row wins",
                    )
                )
            first_line[number] = line
            profiles[number] = row
    report.problems.sort()
    return profiles, report


def _lookup_id(text: str) -> str | None:
    key, _, value = text.partition(":")
    if not key or safe_document_id(value) is None:
        return None
    return lookup_document_id(key.strip(), value)


def import_profiles(
    client: Any,
    path: Path,
    *,
    collection: str = "profiles",
    id_column: str = "phone",
    region: str = "US",
    dry_run: bool = False,
    replace: bool = False,
) -> ImportReport:
    """Write the file's profiles, merged into existing documents unless `replace`."""
    profiles, report = read_profiles(path, id_column, region)
    report.written, report.replace = len(profiles), replace
    items = list(profiles.items())
    for start in range(0, len(items), BATCH_SIZE):
        references = [
            client.collection(collection).document(document_id)
            for document_id, _ in items[start : start + BATCH_SIZE]
        ]
        report.existing += sum(1 for snapshot in client.get_all(references) if snapshot.exists)
    if dry_run:
        return report
    for start in range(0, len(items), BATCH_SIZE):
        batch = client.batch()
        for number, fields in items[start : start + BATCH_SIZE]:
            batch.set(client.collection(collection).document(number), fields, merge=not replace)
        batch.commit()
    return report


def _id_column(document_id: str) -> dict[str, str]:
    """The import column that recreates this document id."""
    if document_id.startswith(LOOKUP_PREFIX):
        return {"lookup": document_id[len(LOOKUP_PREFIX) :]}
    return {"phone": document_id}


def export_profiles(
    client: Any, output: TextIO, *, collection: str = "profiles", fmt: str = "jsonl"
) -> int:
    rows = [
        {**_id_column(snapshot.id), **to_plain(snapshot.to_dict() or {})}
        for snapshot in client.collection(collection).stream()
    ]
    if fmt == "jsonl":
        for row in rows:
            output.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        rows = [_csv_row(row) for row in rows]
        ids = ["phone", "lookup"] if any("lookup" in row for row in rows) else ["phone"]
        columns = sorted({key for row in rows for key in row} - set(ids))
        writer = csv.DictWriter(output, [*ids, *columns])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return len(rows)


def _csv_row(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A profile as the CSV import reads it back: maps as dotted columns, lists as JSON."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_csv_row(value, f"{name}."))
        elif name == "agents" and isinstance(value, list):
            flat[name] = ";".join(map(str, value))
        elif isinstance(value, dict | list):
            flat[name] = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        else:
            flat[name] = value
    return flat


@dataclass
class MigrationReport:
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old id, new id)
    conflicts: list[str] = field(default_factory=list)  # old ids whose target exists already
    skipped: list[str] = field(default_factory=list)  # ids no lookup value could have named

    def summary(self, dry_run: bool) -> str:
        verb = "would move" if dry_run else "moved"
        lines = [f"{verb} {len(self.moved)} profiles into the lookup namespace"]
        lines += [f"  {old} -> {new}" for old, new in self.moved]
        lines += [f"  {old}: target exists, left in place" for old in self.conflicts]
        lines += [f"  {old}: not a valid lookup value, left in place" for old in self.skipped]
        return "\n".join(lines)


def migrate_lookups(
    client: Any, key: str, *, collection: str = "profiles", dry_run: bool = False
) -> MigrationReport:
    """Move documents named directly by a lookup value to `lookup:<key>:<id>`."""
    report = MigrationReport()
    profiles = client.collection(collection)
    legacy = [
        snapshot
        for snapshot in profiles.stream()
        if not snapshot.id.startswith(LOOKUP_PREFIX)
        and normalise_phone(snapshot.id, "US") != snapshot.id
    ]
    batch, writes = client.batch(), 0
    for snapshot in legacy:
        if safe_document_id(snapshot.id) is None or not LOOKUP_KEY.match(key):
            report.skipped.append(snapshot.id)
            continue
        target = profiles.document(lookup_document_id(key, snapshot.id))
        if target.get().exists:
            report.conflicts.append(snapshot.id)
            continue
        report.moved.append((snapshot.id, target.id))
        if dry_run:
            continue
        # Copy and delete in one batch: the profile is never in both places nor in neither.
        batch.set(target, snapshot.to_dict() or {})
        batch.delete(snapshot.reference)
        writes += 2
        if writes >= BATCH_SIZE:
            batch.commit()
            batch, writes = client.batch(), 0
    if writes:
        batch.commit()
    return report


def show_answer(
    client: Any,
    agent_id: str,
    from_number: str | None,
    to_number: str | None,
    params: dict[str, str],
) -> dict[str, Any]:
    """What the prefetch webhook answers for this call, from the same code the service runs."""
    settings = get_settings()
    store = ProfileStore(
        ClientDocumentReader(client),
        profiles_collection=settings.profiles_collection,
        agents_collection=settings.agents_collection,
        cache=DocumentCache(0, 0, 0),
    )
    service = PrefetchService(
        store,
        deadline_seconds=max(settings.prefetch_deadline_ms / 1000, 5.0),
        default_format=settings.prefetch_response_format,
        default_region=settings.default_phone_region,
        default_lookup_key=settings.prefetch_lookup_key,
        lookup_signing_secrets={  # as the service: unsigned lookups of such agents are ignored
            agent: [secret.get_secret_value() for secret in secrets]
            for agent, secrets in settings.lookup_signing_secrets.items()
        },
        default_caller_numbers=settings.prefetch_caller_numbers,
    )
    answer = service.answer(
        PrefetchRequest(agent_id, "profiles-show", from_number, to_number, params)
    )
    agent = client.collection(settings.agents_collection).document(agent_id).get()
    shown: dict[str, Any] = {
        "answer": answer.body,
        "profile_found": answer.profile_found,
        # Whether --from/--to could find anyone for this agent (service/prefetch/identity.py).
        "caller_numbers": caller_numbers_mode(agent.to_dict(), settings.prefetch_caller_numbers),
    }
    shown["matched"] = (
        f"{settings.profiles_collection}/{answer.profile_id}" if answer.profile_id else None
    )
    if not agent.exists:
        shown["agent"] = f"no document {settings.agents_collection}/{agent_id}: no agent defaults"
    if params:
        shown["params"] = explain_params(agent_id, agent.to_dict() or {}, params, answer.profile_id)
    # Documents this call could have used whose reserved fields make them serve nobody.
    problems = {}
    key = (agent.to_dict() or {}).get("lookup_key") or settings.prefetch_lookup_key
    lookup_value = params.get(key) if isinstance(key, str) and key else None
    lookup_id = (
        lookup_document_id(key, lookup_value)
        if lookup_value and safe_document_id(lookup_value)
        else None
    )
    for number in (lookup_id, from_number, to_number):
        document_id = (
            number
            if number is not None and number == lookup_id
            else normalise_phone(number, settings.default_phone_region)
        )
        if document_id:
            snapshot = client.collection(settings.profiles_collection).document(document_id).get()
            found = reserved_field_problems(snapshot.to_dict() or {})
            if found:
                problems[document_id] = found
    agent_problems = reserved_field_problems(agent.to_dict() or {}, "agent")
    agent_problems += memory_problems(agent.to_dict() or {})  # memory off until fixed
    if agent_problems:
        problems[f"agents/{agent_id}"] = agent_problems
    if problems:
        shown["problems"] = problems
    return shown


def explain_params(
    agent_id: str, agent: dict[str, Any], params: dict[str, str], matched: str | None
) -> dict[str, str]:
    """How the webhook uses each call parameter: the lookup key, its signature, or a template
    value only, and why."""
    settings = get_settings()
    key = agent.get("lookup_key", settings.prefetch_lookup_key)
    if "lookup_key" in agent and not (isinstance(key, str) and LOOKUP_KEY.match(key)):
        no_lookup = f"agent {agent_id}'s lookup_key {key!r} is not usable, so lookups are off"
        key = None
    elif not key:
        no_lookup = f"agent {agent_id} has no lookup_key and PREFETCH_LOOKUP_KEY is empty"
    else:
        no_lookup = f"the lookup key of agent {agent_id} is {key}"
    secrets = [s.get_secret_value() for s in settings.lookup_signing_secrets.get(agent_id, [])]
    explained = {}
    for name, value in params.items():
        if key and name == key:
            document_id = lookup_document_id(key, value) if safe_document_id(value) else None
            sent = params.get(key + SIGNATURE_SUFFIX, "").lower()
            if document_id is None:
                explained[name] = "lookup key, ignored: the value cannot name a document"
            elif secrets and not signed(value, sent, secrets):
                explained[name] = (
                    f"lookup key, ignored: agent {agent_id} requires it signed "
                    f"({key}{SIGNATURE_SUFFIX}) and the signature is missing or wrong"
                )
            elif matched == document_id:
                explained[name] = f"lookup key: profiles/{document_id} answered"
            else:
                explained[name] = f"lookup key: profiles/{document_id} is missing or serves nobody"
        elif key and name == key + SIGNATURE_SUFFIX:
            explained[name] = f"signature of {key}"
        else:
            explained[name] = f"template value only ({no_lookup})"
    return explained


def main(argv: list[str] | None = None) -> int:
    parser = toolkit.parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="import profiles from CSV or JSON Lines")
    importing.add_argument("file", type=Path)
    importing.add_argument("--id-column", default="phone")
    importing.add_argument(
        "--region", default=None, help="region of national numbers (default DEFAULT_PHONE_REGION)"
    )
    importing.add_argument(
        "--dry-run", action="store_true", help="validate and report, write nothing"
    )
    importing.add_argument(
        "--replace",
        action="store_true",
        help="replace whole documents (default: merge, keeping fields not in the file)",
    )
    exporting = commands.add_parser("export", help="export every profile")
    exporting.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    exporting.add_argument("--output", type=Path, help="file to write (default: standard output)")
    showing = commands.add_parser("show", help="print what the prefetch webhook would answer")
    showing.add_argument("--agent", required=True)
    showing.add_argument("--from", dest="from_number", help="the call's from number")
    showing.add_argument("--to", dest="to_number", help="the call's to number")
    showing.add_argument("--param", action="append", default=[], help="call metadata, key=value")
    migrating = commands.add_parser(
        "migrate-lookups", help="move profiles named by a lookup value into lookup:<key>:<id>"
    )
    migrating.add_argument("--key", required=True, help="the agents' lookup key, e.g. crm_id")
    migrating.add_argument("--dry-run", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    if args.command == "import" and not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    bad_params = [item for item in getattr(args, "param", []) if "=" not in item]
    if bad_params:
        parser.error(f"--param {bad_params[0]!r}: write it as key=value")

    toolkit.use_stack("profiles")
    settings = get_settings()
    client = firestore_client(settings.google_cloud_project, settings.firestore_database)
    if args.command == "import":
        report = import_profiles(
            client,
            args.file,
            collection=settings.profiles_collection,
            id_column=args.id_column,
            region=args.region or settings.default_phone_region,
            dry_run=args.dry_run,
            replace=args.replace,
        )
        print(report.summary(args.dry_run))
        return toolkit.NEEDS_ATTENTION if report.problems else toolkit.DONE
    if args.command == "export":
        target = (
            args.output.open("w", newline="") if args.output else contextlib.nullcontext(sys.stdout)
        )
        with target as output:
            count = export_profiles(
                client, output, collection=settings.profiles_collection, fmt=args.format
            )
        where = f" to {args.output}" if args.output else ""
        print(f"exported {count} profiles{where}", file=sys.stderr)
        return toolkit.DONE
    if args.command == "migrate-lookups":
        migration = migrate_lookups(
            client, args.key, collection=settings.profiles_collection, dry_run=args.dry_run
        )
        print(migration.summary(args.dry_run))
        return toolkit.NEEDS_ATTENTION if migration.conflicts or migration.skipped else 0
    params = dict(item.split("=", 1) for item in args.param)
    print(
        json.dumps(
            show_answer(client, args.agent, args.from_number, args.to_number, params),
            indent=2,
            ensure_ascii=False,
        )
    )
    return toolkit.DONE


if __name__ == "__main__":
    toolkit.run("profiles", main)
