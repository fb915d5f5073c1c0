# The webhook token: supplied, or generated here. It lives in Secret Manager and reaches the
# service as the WEBHOOK_TOKENS environment variable; rotate by adding a version with two
# comma-separated tokens, moving Millis to the new one, then removing the old one.
resource "random_password" "webhook_token" {
  length  = 40
  special = false
}

locals {
  webhook_token = coalesce(var.webhook_token, random_password.webhook_token.result)
}

resource "google_secret_manager_secret" "webhook_token" {
  project   = var.project_id
  secret_id = "${var.service_name}-token"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "webhook_token" {
  secret      = google_secret_manager_secret.webhook_token.id
  secret_data = local.webhook_token
}
