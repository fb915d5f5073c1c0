# Tables and views come from service/schemas, the same files the service and the tests use.
locals {
  schema_dir = "${path.module}/../service/schemas"
  tables     = jsondecode(file("${local.schema_dir}/tables.json"))
}

resource "google_bigquery_dataset" "millis" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; a customer-managed key is an organisation choice this module leaves out.
  project     = var.project_id
  dataset_id  = var.bigquery_dataset
  location    = module.data_location.bigquery_location
  description = "Millis AI calls: the append-only call_events table and the views that read it."
  # Erased rows stay readable this long (time travel), then 7 days of fail-safe.
  max_time_travel_hours = tostring(var.bigquery_time_travel_hours)

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
    # Retention of calls (transcripts, phone numbers): kept until erased unless a period is set.
    expiration_ms = var.call_events_retention_days == null ? null : var.call_events_retention_days * 86400000
  }
}

# Views read each other, so they are created in three waves: `calls` (one row per session)
# reads the table; `call_costs` and `cost_by_provider` read `calls`; the rest read `call_costs`.
locals {
  view_waves = [
    { calls = "One row per Millis session: the latest delivery. Read this, not call_events." },
    {
      call_costs       = "One row per call with the cost components as columns."
      cost_by_provider = "Cost per day, agent, component type and provider."
    },
    {
      cost_daily_by_agent   = "Cost per day and agent: calls, minutes, total credit, credit by type."
      cost_monthly_by_agent = "Cost per calendar month and agent."
    },
  ]
  # `calls` is the relation call_costs.sql reads: the view here, calls_between() in the function.
  view_sql_variables = {
    project = var.project_id
    dataset = var.bigquery_dataset
    calls   = "`${var.project_id}.${var.bigquery_dataset}.calls`"
  }
  function_sql_variables = merge(local.view_sql_variables, {
    calls = "`${var.project_id}.${var.bigquery_dataset}.calls_between`(start_date, end_date)"
  })

}

resource "google_bigquery_table" "views_1" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  for_each = local.view_waves[0]

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = each.key
  description         = each.value
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/${each.key}.sql", local.view_sql_variables)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}

resource "google_bigquery_table" "views_2" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  for_each = local.view_waves[1]

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = each.key
  description         = each.value
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/${each.key}.sql", local.view_sql_variables)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.views_1]
}

resource "google_bigquery_table" "views_3" {
  #checkov:skip=CKV_GCP_80:A view stores no data.
  #checkov:skip=CKV_GCP_121:A view stores no data; it is recreated from its SQL file.
  for_each = local.view_waves[2]

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.millis.dataset_id
  table_id            = each.key
  description         = each.value
  deletion_protection = false

  view {
    query          = templatefile("${local.schema_dir}/views/${each.key}.sql", local.view_sql_variables)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.views_2]
}

# Table functions for date-bounded reports: they filter the table before ranking deliveries, so
# BigQuery reads only the partitions of the range (a filter on the views cannot prune).
# service/schemas/__init__.py names the same files; call_costs_between reuses call_costs.sql.
resource "google_bigquery_routine" "calls_between" {
  project         = var.project_id
  dataset_id      = google_bigquery_dataset.millis.dataset_id
  routine_id      = "calls_between"
  routine_type    = "TABLE_VALUED_FUNCTION"
  language        = "SQL"
  description     = "One row per session started between start_date and end_date (inclusive, UTC): the latest delivery."
  definition_body = templatefile("${local.schema_dir}/functions/calls_between.sql", local.function_sql_variables)

  arguments {
    name      = "start_date"
    data_type = jsonencode({ typeKind = "DATE" })
  }
  arguments {
    name      = "end_date"
    data_type = jsonencode({ typeKind = "DATE" })
  }

  depends_on = [google_bigquery_table.tables]
}

resource "google_bigquery_routine" "call_costs_between" {
  project         = var.project_id
  dataset_id      = google_bigquery_dataset.millis.dataset_id
  routine_id      = "call_costs_between"
  routine_type    = "TABLE_VALUED_FUNCTION"
  language        = "SQL"
  description     = "call_costs for the calls started between start_date and end_date (inclusive, UTC)."
  definition_body = templatefile("${local.schema_dir}/views/call_costs.sql", local.function_sql_variables)

  arguments {
    name      = "start_date"
    data_type = jsonencode({ typeKind = "DATE" })
  }
  arguments {
    name      = "end_date"
    data_type = jsonencode({ typeKind = "DATE" })
  }

  depends_on = [google_bigquery_routine.calls_between]
}
