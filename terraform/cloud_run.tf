resource "google_cloud_run_v2_service" "webhooks" {
  project  = var.project_id
  name     = var.service_name
  location = var.region
  # Millis calls from the internet; the app checks the webhook token itself.
  ingress = "INGRESS_TRAFFIC_ALL"
  # Public without an allUsers binding (refused where the organisation restricts sharing to its
  # domain): Cloud Run's recommended way. var.public_access = "all_users_binding" uses the binding.
  invoker_iam_disabled = var.public_access == "invoker_iam_disabled"
  deletion_protection  = false

  template {
    service_account                  = google_service_account.runtime.email
    timeout                          = "60s"
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = merge(var.extra_env, {
          GOOGLE_CLOUD_PROJECT      = var.project_id
          FIRESTORE_DATABASE        = var.firestore_database
          BIGQUERY_DATASET          = google_bigquery_dataset.millis.dataset_id
          BIGQUERY_EVENTS_TABLE     = "call_events"
          BIGQUERY_LOCATION         = module.data_location.bigquery_location
          LOG_LEVEL                 = var.log_level
          PREFETCH_DEADLINE_MS      = tostring(var.prefetch_deadline_ms)
          PROFILE_CACHE_TTL_SECONDS = tostring(var.profile_cache_ttl_seconds)
          DEFAULT_PHONE_REGION      = var.default_phone_region
          STORE_AGENT_CONFIG        = var.store_agent_config
          BIGQUERY_WRITE_API        = var.bigquery_write_api
          MEMORY_RETENTION_DAYS     = tostring(var.memory_retention_days)
          # gunicorn threads: one per concurrent request plus spares, so that a liveness probe
          # always finds a free thread on a busy instance (service/web/server.py).
          THREADS = tostring(var.concurrency + 4)
          # End-of-calls served at once; beyond, 503 + Retry-After at once. The other half of the
          # threads stays for the prefetch whatever BigQuery does (service/web/guard.py).
          END_OF_CALL_MAX_IN_FLIGHT = tostring(max(1, floor(var.concurrency / 2)))
        })
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "WEBHOOK_TOKENS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.webhook_token.secret_id
            version = "latest"
          }
        }
      }

      dynamic "env" {
        for_each = local.lookup_signing_enabled ? [1] : []
        content {
          name = "LOOKUP_SIGNING_SECRETS"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.lookup_signing[0].secret_id
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 1
        timeout_seconds   = 1
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 30
        timeout_seconds   = 2
        failure_threshold = 3
      }
    }
  }

  lifecycle {
    # Cloud Build deploys each new image: Terraform must not roll it back.
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_version.webhook_token,
    time_sleep.runtime_grants_propagate,
  ]
}

# Millis cannot send Google identity tokens, so the service is publicly invocable; the app
# refuses every webhook call without the shared token (and answers 503 if none is configured).
# Only with public_access = "all_users_binding"; the default disables the invoker check instead.
resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  count = var.public_access == "all_users_binding" ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.webhooks.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
