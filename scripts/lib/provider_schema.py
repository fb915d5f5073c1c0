"""Regenerate tests/infra/provider_schema.json: the arguments and nested blocks of every resource
type terraform/ uses, in each provider version we check, read offline-able from the jsii assembly
inside the `cdktn-provider-*` wheels (generated from the providers' own schemas).

    .venv/bin/python scripts/lib/provider_schema.py  # needs PyPI; the tests then read the JSON only

Each property's documentation links the registry page of its resource with the argument's own
name as anchor (`.../resources/cloud_run_v2_service#invoker_iam_disabled`): that anchor is the
HCL name. A property whose type is a struct (or a list of structs) is a nested block.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "tests" / "infra" / "provider_schema.json"
# cdktn package version -> the provider version it was generated from (README of each wheel).
CHECKED = {
    "google": [
        "cdktn-provider-google==16.13.0",
        "cdktn-provider-google==19.10.0",
        "cdktn-provider-google==21.1.0",
    ],
    "time": ["cdktn-provider-time==14.0.2"],
    "random": ["cdktn-provider-random==15.0.1"],
}
_RESOURCE_LINK = re.compile(r"/docs/resources/([a-z0-9_]+)\b")
_ANCHOR = re.compile(r"/docs/resources/([a-z0-9_]+)#([a-z0-9_]+)")
_PROVIDER_VERSION = re.compile(r"hashicorp/[a-z]+/(\d+\.\d+\.\d+)")


def used_resource_types() -> set[str]:
    text = "\n".join(path.read_text() for path in (ROOT / "terraform").glob("*.tf"))
    return set(re.findall(r'^resource\s+"([a-z0-9_]+)"', text, re.MULTILINE))


def assembly(requirement: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        pip = shutil.which("pip3") or shutil.which("pip") or "pip"  # uv's venvs have no pip
        subprocess.run(
            [pip, "download", "--no-deps", "-q", "-d", directory, requirement], check=True
        )
        [wheel] = Path(directory).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            [name] = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(archive.read(name))) as tar:
                member = tar.extractfile("package/.jsii")
                assert member is not None
                raw = member.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)  # type: ignore[no-any-return]


def struct_fqn(type_ref: dict[str, Any], types: dict[str, Any]) -> str | None:
    """The struct a property holds (itself, in a list, or in a union with IResolvable)."""
    fqn = type_ref.get("fqn")
    if fqn in types and types[fqn].get("datatype"):
        return str(fqn)
    if "collection" in type_ref:
        return struct_fqn(type_ref["collection"]["elementtype"], types)
    for option in type_ref.get("union", {}).get("types", []):
        found = struct_fqn(option, types)
        if found:
            return found
    return None


def schema_of(types: dict[str, Any], fqn: str, resource: str, depth: int = 0) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        anchor = _ANCHOR.search(f"{docs.get('summary', '')} {docs.get('remarks', '')}")
        if not anchor or anchor.group(1) != resource:
            continue  # a meta-argument (count, depends_on, ...) or not an HCL argument
        nested = struct_fqn(prop["type"], types)
        is_block = nested is not None and depth < 12
        tree[anchor.group(2)] = schema_of(types, nested, resource, depth + 1) if is_block else None
    return tree


def main() -> None:
    wanted = used_resource_types()
    result: dict[str, dict[str, Any]] = {}
    for provider, requirements in CHECKED.items():
        for requirement in requirements:
            data = assembly(requirement)
            version = _PROVIDER_VERSION.search(data.get("readme", {}).get("markdown", ""))
            label = f"{provider} {version.group(1) if version else requirement}"
            schemas: dict[str, Any] = {}
            for fqn, definition in data["types"].items():
                # A resource is a class with the static `tfResourceType`; its arguments are in
                # the struct `<class>Config`, its name in the class's registry link.
                statics = {p["name"] for p in definition.get("properties", []) if p.get("static")}
                if definition.get("kind") != "class" or "tfResourceType" not in statics:
                    continue
                match = _RESOURCE_LINK.search(definition.get("docs", {}).get("summary", ""))
                config = f"{fqn}Config"
                if not match or config not in data["types"]:
                    continue
                resource_type = f"{provider}_{match.group(1)}"
                if resource_type in wanted:
                    schemas[resource_type] = schema_of(data["types"], config, match.group(1))
            result[label] = schemas
            print(label, len(schemas), "resource types", flush=True)
    OUTPUT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
