# Caller memory (service/memory, docs/profiles.md): profiles/<caller>/memory/<scope> and its
# memory_sessions markers each carry `expires_at`, the caller's last call plus
# memory_retention_days; every call moves it on. Firestore's TTL policy deletes documents whose
# time has passed (Google: typically within 24 hours after it).
resource "google_firestore_field" "memory_expiry" {
  for_each = toset(["memory", "memory_sessions"])

  project    = var.project_id
  database   = var.firestore_database
  collection = each.value
  field      = "expires_at"

  ttl_config {}
  # Never queried: no index (Google advises against indexing a TTL timestamp).
  index_config {}

  depends_on = [google_firestore_database.profiles, google_project_service.enabled]
}

# scripts/erase.py --session-id finds a session's markers in every caller's memory: a
# collection-group query, which needs this single-field index.
resource "google_firestore_field" "memory_session_id" {
  project    = var.project_id
  database   = var.firestore_database
  collection = "memory_sessions"
  field      = "session_id"

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }

  depends_on = [google_firestore_database.profiles, google_project_service.enabled]
}
