# Every other resource is ordered after these (directly or through what it references; checked
# by tests/infra): in a new project even iam.googleapis.com is off until enabled here.
locals {
  services = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    # The Storage Write API (BIGQUERY_WRITE_API=storage_write) is its own API.
    "bigquerystorage.googleapis.com",
    "cloudbuild.googleapis.com",
    # Project IAM bindings (google_project_iam_member) go through this API; not on by default.
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtrace.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project = var.project_id
  service = each.value
  # Other workloads of the project may use these APIs: never disable them on destroy.
  disable_on_destroy = false
}
