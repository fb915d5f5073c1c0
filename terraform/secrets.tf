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

# Optional: per-agent secrets for signed lookup keys (LOOKUP_SIGNING_SECRETS, README "Lookup
# keys"), kept in Secret Manager and never in Firestore. Created only when the variable is set.
locals {
  lookup_signing_enabled = nonsensitive(var.lookup_signing_secrets != null)
}

resource "google_secret_manager_secret" "lookup_signing" {
  count = local.lookup_signing_enabled ? 1 : 0

  project   = var.project_id
  secret_id = "${var.service_name}-lookup-signing"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "lookup_signing" {
  count = local.lookup_signing_enabled ? 1 : 0

  secret      = google_secret_manager_secret.lookup_signing[0].id
  secret_data = var.lookup_signing_secrets
}

resource "google_secret_manager_secret_iam_member" "runtime_lookup_signing" {
  count = local.lookup_signing_enabled ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.lookup_signing[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
