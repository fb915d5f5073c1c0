# The runtime identity of the service: only what the webhooks need, each grant on the narrowest
# resource IAM offers. The project-level roles are listed in README.md and checked by the tests.
locals {
  runtime_project_roles = [
    # Firestore grants access per project only: profiles, agents and dead letters.
    "roles/datastore.user",
    "roles/logging.logWriter",
    "roles/cloudtrace.agent",
  ]
}

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${var.service_name}-run"
  display_name = "millis-webhooks runtime"
  description  = "Identity of the ${var.service_name} Cloud Run service."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "runtime" {
  for_each = toset(local.runtime_project_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.runtime.member
}

# BigQuery: insert rows and read the views, in this dataset only.
resource "google_bigquery_dataset_iam_member" "runtime_data_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.millis.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.runtime.member
}

# IAM changes take 2 to 7 minutes to propagate
# (https://cloud.google.com/iam/docs/access-change-propagation): the first revision would start
# before it may read its secret and fail the first apply. Cloud Run waits for this pause.
resource "time_sleep" "runtime_grants_propagate" {
  create_duration = var.iam_propagation_wait

  triggers = {
    project_roles = join(",", [for member in google_project_iam_member.runtime : member.id])
    dataset       = google_bigquery_dataset_iam_member.runtime_data_editor.id
    secret        = google_secret_manager_secret_iam_member.runtime_token.id
    lookup        = join(",", google_secret_manager_secret_iam_member.runtime_lookup_signing[*].id)
  }
}

# Secret Manager: its own token only.
resource "google_secret_manager_secret_iam_member" "runtime_token" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.webhook_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
