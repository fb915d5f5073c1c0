# Tables and views come from service/schemas, the same files the service and the tests use.
locals {
  schema_dir = "${path.module}/../service/schemas"
  tables     = jsondecode(file("${local.schema_dir}/tables.json"))
}

resource "google_bigquery_dataset" "millis" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; a customer-managed key is an organisation choice this module leaves out.
  project     = var.project_id
  dataset_id  = var.bigquery_dataset
  location    = var.bigquery_location
  description = "Millis AI calls: the append-only call_events table and the views that read it."

  depends_on = [google_project_service.enabled]
}

resource "google_bigquery_table" "tables" {
  #checkov:skip=CKV_GCP_80:Google-managed encryption, as for the dataset.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = each.key
  description         = each.value.description
  schema              = file("${local.schema_dir}/${each.value.schema}")
  clustering          = each.value.clustering
  deletion_protection = var.deletion_protection

  time_partitioning {
    type  = each.value.time_partitioning.type
    field = each.value.time_partitioning.field
  }
}

# Views, in dependency order: calls (one row per session) first, then the cost views.
resource "google_bigquery_table" "view_calls" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = "calls"
  description         = "One row per Millis session: the latest delivery. Read this, not call_events."
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/calls.sql", { project = var.project_id, dataset = var.bigquery_dataset })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}

resource "google_bigquery_table" "view_call_costs" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = "call_costs"
  description         = "One row per call with the cost components as columns."
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/call_costs.sql", { project = var.project_id, dataset = var.bigquery_dataset })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.view_calls]
}

resource "google_bigquery_table" "view_cost_daily_by_agent" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = "cost_daily_by_agent"
  description         = "Cost per day and agent: calls, minutes, total credit, credit by type."
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/cost_daily_by_agent.sql", { project = var.project_id, dataset = var.bigquery_dataset })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.view_call_costs]
}

resource "google_bigquery_table" "view_cost_monthly_by_agent" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = "cost_monthly_by_agent"
  description         = "Cost per calendar month and agent."
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/cost_monthly_by_agent.sql", { project = var.project_id, dataset = var.bigquery_dataset })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.view_call_costs]
}

resource "google_bigquery_table" "view_cost_by_provider" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = "cost_by_provider"
  description         = "Cost per day, agent, component type and provider."
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/cost_by_provider.sql", { project = var.project_id, dataset = var.bigquery_dataset })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.view_calls]
}
