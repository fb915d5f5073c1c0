# Dead letters replay themselves: a Cloud Run job from the service's image runs
# `python -m service.jobs.replay` on a Cloud Scheduler schedule, under its own least-privilege
# account. The job exits 1 when it is stuck (dead letters older than replay_alert_after_minutes
# remain and the run could not move them), so a failed execution is what alerts a person; a run
# that drains a backlog over its 540 s budget succeeds and the next run continues. Leases (service/stores/dead_letters.py) keep the job, a
# manual run and an overlapping schedule from inserting one letter twice.
locals {
  replay_project_roles = [
    # Firestore: read and delete dead letters (no per-collection IAM).
    "roles/datastore.user",
    "roles/logging.logWriter",
    # The caller-memory catch-up queries call_events (service/memory/catch_up.py).
    "roles/bigquery.jobUser",
  ]
}

resource "google_service_account" "replay" {
  project      = var.project_id
  account_id   = "${var.service_name}-replay"
  display_name = "millis-webhooks dead-letter replay"
  description  = "Identity of the ${var.service_name}-replay Cloud Run job."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "replay" {
  for_each = toset(local.replay_project_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.replay.member
}

resource "google_bigquery_dataset_iam_member" "replay_data_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.millis.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.replay.member
}

resource "google_cloud_run_v2_job" "replay" {
  project             = var.project_id
  name                = "${var.service_name}-replay"
  location            = var.region
  deletion_protection = false

  template {
    task_count = 1

    template {
      service_account = google_service_account.replay.email
      timeout         = "600s"
      # The schedule is the retry: a failed run is reported, the next one tries again.
      max_retries = 0

      containers {
        image   = var.image
        command = ["python", "-m", "service.jobs.replay"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = {
            GOOGLE_CLOUD_PROJECT       = var.project_id
            FIRESTORE_DATABASE         = var.firestore_database
            BIGQUERY_DATASET           = google_bigquery_dataset.millis.dataset_id
            BIGQUERY_EVENTS_TABLE      = "call_events"
            LOG_LEVEL                  = var.log_level
            REPLAY_ALERT_AFTER_MINUTES = tostring(var.replay_alert_after_minutes)
            BIGQUERY_WRITE_API         = var.bigquery_write_api
            MEMORY_RETENTION_DAYS      = tostring(var.memory_retention_days)
          }
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    # Cloud Build deploys each new image to the job too.
    ignore_changes = [
      template[0].template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [google_project_service.enabled]
}

# Cloud Scheduler runs the job through the Cloud Run Admin API with its own identity, allowed to
# run this job only.
resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.service_name}-sched"
  display_name = "millis-webhooks scheduler"
  description  = "Runs the ${var.service_name}-replay job on its schedule."

  depends_on = [google_project_service.enabled]
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_replay" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.replay.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_scheduler_job" "replay" {
  project          = var.project_id
  region           = var.region
  name             = "${var.service_name}-replay"
  description      = "Replays dead letters: calls BigQuery did not take."
  schedule         = var.replay_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "320s"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.replay.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_replay]
}

# Cloud Build updates the job's image with each deployment.
resource "google_cloud_run_v2_job_iam_member" "build_deploy_replay" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.replay.name
  role     = "roles/run.developer"
  member   = google_service_account.build.member
}

resource "google_service_account_iam_member" "build_acts_as_replay" {
  service_account_id = google_service_account.replay.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.build.member
}
