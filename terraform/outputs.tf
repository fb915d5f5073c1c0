output "service_url" {
  description = "URL of the Cloud Run service."
  value       = google_cloud_run_v2_service.webhooks.uri
}

output "prefetch_webhook_url" {
  description = "Paste into the Millis dashboard as the prefetch (extra_prompt_webhook) URL; carries the token."
  value       = "${google_cloud_run_v2_service.webhooks.uri}/prefetch?token=${local.webhook_token}"
  sensitive   = true
}

output "end_of_call_webhook_url" {
  description = "Paste into the Millis dashboard as the end-of-call (session_data_webhook) URL; carries the token."
  value       = "${google_cloud_run_v2_service.webhooks.uri}/end-of-call?token=${local.webhook_token}"
  sensitive   = true
}

output "prefetch_url" {
  description = "Prefetch webhook URL without the token (send it in the X-Webhook-Token header)."
  value       = "${google_cloud_run_v2_service.webhooks.uri}/prefetch"
}

output "end_of_call_url" {
  description = "End-of-call webhook URL without the token (send it in the X-Webhook-Token header)."
  value       = "${google_cloud_run_v2_service.webhooks.uri}/end-of-call"
}

output "webhook_token" {
  description = "The shared webhook token."
  value       = local.webhook_token
  sensitive   = true
}

output "bigquery_dataset" {
  description = "Dataset with the call_events table and the calls and cost views."
  value       = "${var.project_id}.${google_bigquery_dataset.millis.dataset_id}"
}

output "image_repository" {
  description = "Artifact Registry path for the service's images."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "build_service_account" {
  description = "Service account Cloud Build runs as (gcloud builds submit --service-account)."
  value       = google_service_account.build.id
}

output "build_sources_bucket" {
  description = "Bucket for the sources of gcloud builds submit (--gcs-source-staging-dir)."
  value       = google_storage_bucket.build_sources.name
}

output "deployment" {
  description = "Project, region, service, repository and dataset names, for scripts/deploy."
  value = {
    project    = var.project_id
    region     = var.region
    service    = google_cloud_run_v2_service.webhooks.name
    repository = google_artifact_registry_repository.images.repository_id
    dataset    = google_bigquery_dataset.millis.dataset_id
  }
}

# Looker Studio Linking API (https://developers.google.com/looker-studio/integrate/linking-api):
# one click opens a report on the daily cost view, to save and edit in your own account.
output "looker_studio_cost_report_url" {
  description = "Opens a Looker Studio report on the cost_daily_by_agent view (Linking API)."
  value = join("", [
    "https://lookerstudio.google.com/reporting/create?r.reportName=",
    urlencode("Millis call costs"),
    "&ds.ds0.connector=bigQuery&ds.ds0.type=TABLE",
    "&ds.ds0.projectId=", urlencode(var.project_id),
    "&ds.ds0.datasetId=", urlencode(google_bigquery_dataset.millis.dataset_id),
    "&ds.ds0.tableId=cost_daily_by_agent",
    "&ds.ds0.datasourceName=", urlencode("Millis cost per day and agent"),
  ])
}

output "monitoring_dashboard" {
  description = "The service's Cloud Monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.service.id), 3)}?project=${var.project_id}"
}
