"""Terraform read against Google's documented rules that the emulators cannot show: alert
policies on new log-based metrics, alerts that can fire, personal data kept out of Cloud Logging,
recovery windows, data location, and the deploy order of a schema change."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_infrastructure import (
    ROOT,
    TERRAFORM,
    resources,
    terraform_blocks,
    unquote,
)

USER_METRIC = re.compile(r"logging\.googleapis\.com/user/")


def variables() -> dict[str, dict[str, Any]]:
    return {unquote(k): v for block in terraform_blocks("variable") for k, v in block.items()}


def test_every_policy_on_a_log_based_metric_waits_for_the_metric_to_be_available() -> None:
    # "Cannot find metric(s) that match type = logging.googleapis.com/user/... If a metric was
    # created recently, it could take up to 10 minutes" (terraform-provider-google issue 11102).
    sleep = resources("time_sleep")["log_metrics_propagate"]
    assert unquote(sleep["create_duration"]) == "${var.log_metric_propagation_wait}"
    assert unquote(variables()["log_metric_propagation_wait"]["default"]) == "600s"
    triggers = json.dumps(sleep["triggers"])
    metrics = resources("google_logging_metric")
    for name in metrics:
        assert f"google_logging_metric.{name}.id" in triggers, name
    readers = 0
    for name, policy in resources("google_monitoring_alert_policy").items():
        if USER_METRIC.search(json.dumps(policy["conditions"])):
            readers += 1
            assert "${time_sleep.log_metrics_propagate}" in policy.get("depends_on", []), name
    assert readers >= 5


def test_silence_fires_without_an_absence_condition() -> None:
    # An absence condition is met only after a first point written after the policy was created
    # (https://cloud.google.com/monitoring/alerts/metric-absence): a URL wrong from day one would
    # never fire it. The silence reads a value every webhook request carries instead.
    policies = resources("google_monitoring_alert_policy")
    assert "condition_absent" not in json.dumps(policies)
    [condition] = policies["silence"]["conditions"]
    threshold = condition["condition_threshold"][0]
    assert "google_logging_metric.end_of_call_accepted.name" in threshold["filter"]
    assert unquote(threshold["comparison"]) == "COMPARISON_LT"
    assert 0 < threshold["threshold_value"] < 0.001
    aggregation = threshold["aggregations"][0]
    assert unquote(aggregation["per_series_aligner"]) == "ALIGN_MEAN"
    assert unquote(aggregation["alignment_period"]) == "${var.silence_hours * 3600}s"
    metric = resources("google_logging_metric")["end_of_call_accepted"]
    assert unquote(metric["value_extractor"]) == "EXTRACT(jsonPayload.end_of_call_accepted)"
    # prefetches count too (value 0): that is what makes a series exist from the first call
    assert "prefetch|end-of-call" in metric["filter"]


def test_runs_of_401_and_403_alert() -> None:
    policy = resources("google_monitoring_alert_policy")["unauthorized"]
    threshold = policy["conditions"][0]["condition_threshold"][0]
    assert 'metric.labels.status=one_of(\\"401\\", \\"403\\")' in threshold["filter"]
    assert unquote(threshold["threshold_value"]) == "${var.alert_unauthorized_per_10_minutes}"


def test_no_metric_reads_cloud_runs_request_log_which_is_kept_out_of_default() -> None:
    # Cloud Run's request log holds the full URL: from, to, metadata, a token in the query.
    [locals_block] = [b for b in terraform_blocks("locals") if "request_log" in b]
    assert "run.googleapis.com%2Frequests" in locals_block["request_log"]
    for name, metric in resources("google_logging_metric").items():
        assert "local.request_log" not in metric["filter"], name
        assert "httpRequest" not in metric["filter"] + metric.get("value_extractor", ""), name
    exclusion = resources("google_logging_project_exclusion")["request_logs"]
    assert unquote(exclusion["filter"]) == "${local.service_filter} AND ${local.request_log}"
    assert not exclusion.get("disabled")


def test_recovery_windows_are_variables() -> None:
    dataset = resources("google_bigquery_dataset")["millis"]
    assert (
        unquote(dataset["max_time_travel_hours"]) == "${tostring(var.bigquery_time_travel_hours)}"
    )
    window = variables()["bigquery_time_travel_hours"]
    assert window["default"] == 168
    assert "var.bigquery_time_travel_hours >= 48" in window["validation"][0]["condition"]
    database = resources("google_firestore_database")["profiles"]
    assert "var.firestore_point_in_time_recovery" in database["point_in_time_recovery_enablement"]
    assert variables()["firestore_point_in_time_recovery"]["default"] is True


def test_the_build_updates_the_table_schema_before_it_deploys() -> None:
    text = (ROOT / "cloudbuild.yaml").read_text()
    steps = [line.strip()[len("- id: ") :] for line in text.splitlines() if "- id: " in line]
    assert steps.index("schema") < steps.index("deploy")
    assert 'bq update "$PROJECT_ID:${_DATASET}.$$table" "service/schemas/$$schema"' in text
    role = resources("google_project_iam_custom_role")["schema_updater"]
    assert sorted(unquote(p) for p in role["permissions"]) == [
        "bigquery.tables.get",
        "bigquery.tables.update",
    ]
    grant = resources("google_bigquery_dataset_iam_member")["build_updates_schema"]
    assert unquote(grant["role"]) == "${google_project_iam_custom_role.schema_updater.name}"
    assert unquote(grant["member"]) == "${google_service_account.build.member}"


# -- data location ----------------------------------------------------------------------------

LOCATIONS = [
    # region, BigQuery, Firestore
    ("us-central1", "US", "nam5"),
    ("us-east4", "US", "nam5"),
    ("europe-west1", "EU", "eur3"),
    ("europe-west3", "EU", "eur3"),
    ("europe-west2", "europe-west2", "europe-west2"),  # London: Europe, not the EU
    ("europe-west6", "europe-west6", "europe-west6"),  # Zurich
    ("asia-northeast1", "asia-northeast1", "asia-northeast1"),
    ("australia-southeast1", "australia-southeast1", "australia-southeast1"),
]


@pytest.fixture(scope="module")
def location_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    directory = tmp_path_factory.mktemp("data_location")
    shutil.copy(TERRAFORM / "modules/data_location/main.tf", directory / "main.tf")
    subprocess.run(
        ["terraform", "init", "-input=false"], cwd=directory, check=True, capture_output=True
    )
    return directory


def apply_location(directory: Path, **values: Any) -> subprocess.CompletedProcess[str]:
    arguments = [f"-var={key}={value}" for key, value in values.items()]
    return subprocess.run(
        ["terraform", "apply", "-auto-approve", "-input=false", "-no-color", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def outputs(directory: Path) -> dict[str, str]:
    result = subprocess.run(
        ["terraform", "output", "-json"], cwd=directory, capture_output=True, text=True, check=True
    )
    return {name: value["value"] for name, value in json.loads(result.stdout).items()}


@pytest.mark.parametrize(("region", "bigquery", "firestore"), LOCATIONS)
def test_data_locations_follow_the_region(
    location_module: Path, region: str, bigquery: str, firestore: str
) -> None:
    applied = apply_location(location_module, region=region)
    assert applied.returncode == 0, applied.stderr
    found = outputs(location_module)
    assert (found["bigquery_location"], found["firestore_location"]) == (bigquery, firestore)


def test_locations_outside_the_regions_geography_are_refused_unless_stated(
    location_module: Path,
) -> None:
    refused = apply_location(location_module, region="europe-west1", bigquery_location="US")
    assert refused.returncode != 0 and "outside the geography" in " ".join(refused.stderr.split())
    refused = apply_location(location_module, region="europe-west2", firestore_location="eur3")
    assert refused.returncode != 0 and "outside the geography" in " ".join(refused.stderr.split())
    # a region inside its own multi-region is fine; an explicit choice is accepted when stated
    assert (
        apply_location(location_module, region="us-east1", bigquery_location="us-east1").returncode
        == 0
    )
    stated = apply_location(
        location_module,
        region="europe-west1",
        bigquery_location="US",
        allow_data_outside_region="true",
    )
    assert stated.returncode == 0, stated.stderr
    assert outputs(location_module)["bigquery_location"] == "US"


def test_every_data_location_comes_from_the_module() -> None:
    text = "\n".join(path.read_text() for path in TERRAFORM.glob("*.tf"))
    assert "var.bigquery_location" not in text.replace(
        "bigquery_location         = var.bigquery_location", ""
    )
    dataset = resources("google_bigquery_dataset")["millis"]
    assert unquote(dataset["location"]) == "${module.data_location.bigquery_location}"
    database = resources("google_firestore_database")["profiles"]
    assert unquote(database["location_id"]) == "${module.data_location.firestore_location}"
    assert variables()["bigquery_location"]["default"] in (None, "${null}")
    assert variables()["firestore_location"]["default"] in (None, "${null}")
