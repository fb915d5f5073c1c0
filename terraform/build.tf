# Cloud Build runs as its own service account with only what a deployment needs.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.service_name}-build"
  display_name = "millis-webhooks build"
  description  = "Builds, pushes and deploys ${var.service_name} (cloudbuild.yaml)."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_push" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

resource "google_cloud_run_v2_service_iam_member" "build_deploy" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.webhooks.name
  role     = "roles/run.developer"
  member   = google_service_account.build.member
}

# The build adds new columns to the tables before it deploys the image that writes them
# (cloudbuild.yaml, step `schema`): a role with just that, on the dataset only.
resource "google_project_iam_custom_role" "schema_updater" {
  project     = var.project_id
  role_id     = "${replace(var.service_name, "-", "_")}_schema_updater"
  title       = "${var.service_name} table schema updater"
  description = "Reads and updates the schema of the ${var.service_name} tables (cloudbuild.yaml, step schema)."
  permissions = ["bigquery.tables.get", "bigquery.tables.update"]

  depends_on = [google_project_service.enabled]
}

resource "google_bigquery_dataset_iam_member" "build_updates_schema" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.millis.dataset_id
  role       = google_project_iam_custom_role.schema_updater.name
  member     = google_service_account.build.member
}

# Deploying a revision that runs as the runtime account requires acting as it.
resource "google_service_account_iam_member" "build_acts_as_runtime" {
  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.build.member
}

# Source uploads of `gcloud builds submit`, readable by the build account only.
resource "google_storage_bucket" "build_sources" {
  #checkov:skip=CKV_GCP_62:Holds transient source uploads deleted after 30 days; Cloud Build logs every build.
  depends_on = [google_project_service.enabled]

  project                     = var.project_id
  name                        = "${var.project_id}-${var.service_name}-builds"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "build_reads_sources" {
  bucket = google_storage_bucket.build_sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# Optional: build and deploy on every push to main of a GitHub repository connected to Cloud Build.
resource "google_cloudbuild_trigger" "main" {
  count = var.github_owner != "" && var.github_repository != "" ? 1 : 0

  project         = var.project_id
  location        = var.region
  name            = "${var.service_name}-main"
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.build.id

  github {
    owner = var.github_owner
    name  = var.github_repository
    push {
      branch = "^main$"
    }
  }

  substitutions = {
    _REGION     = var.region
    _SERVICE    = var.service_name
    _REPOSITORY = google_artifact_registry_repository.images.repository_id
    _DATASET    = google_bigquery_dataset.millis.dataset_id
  }

  depends_on = [google_project_service.enabled]
}
