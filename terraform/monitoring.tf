# Alerts that reach a person, and the service's dashboard (docs/operations.md, "Alerts").
#
# Log-based metrics read only the service's own lines, written at every LOG_LEVEL (the
# `service.signals` logger): one "webhook request" line per request with its route, status and
# latency (never the URL or its query), and "call kept as a dead letter". Cloud Run's own request
# log holds the full URL (phone numbers, metadata, a token in the query) and is kept out of the
# _Default bucket below. Every alert policy says what happened and what to do.
locals {
  service_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.service_name}\""
  request_log    = "logName=\"projects/${var.project_id}/logs/run.googleapis.com%2Frequests\""
  service_log    = "logName=\"projects/${var.project_id}/logs/run.googleapis.com%2Fstdout\""
  webhook_line   = "${local.service_filter} AND ${local.service_log} AND jsonPayload.message=\"webhook request\""
  notification_channels = [
    for channel in google_monitoring_notification_channel.email : channel.id
  ]
}

# Cloud Run writes a request log entry for every request, with the full URL: for the prefetch
# `from`, `to`, every metadata value and the token when it travels in the query
# (https://cloud.google.com/run/docs/logging). Not stored in the _Default bucket: the service's own
# "webhook request" line carries route, status and latency instead.
resource "google_logging_project_exclusion" "request_logs" {
  project     = var.project_id
  name        = "${var.service_name}-request-urls"
  description = "Cloud Run request logs of ${var.service_name}: their URLs hold phone numbers and caller metadata."
  filter      = "${local.service_filter} AND ${local.request_log}"

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.service_name} on-call"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "webhook_requests" {
  project = var.project_id
  name    = "${var.service_name}/webhook_requests"
  filter  = local.webhook_line

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "route"
      value_type = "STRING"
    }
    labels {
      key        = "status"
      value_type = "STRING"
    }
  }
  label_extractors = {
    route  = "EXTRACT(jsonPayload.route)"
    status = "EXTRACT(jsonPayload.status)"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "prefetch_latency" {
  project         = var.project_id
  name            = "${var.service_name}/prefetch_latency"
  filter          = "${local.webhook_line} AND jsonPayload.route=\"/prefetch\""
  value_extractor = "EXTRACT(jsonPayload.latency_seconds)"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.3
      scale              = 0.001
    }
  }

  depends_on = [google_project_service.enabled]
}

# 1 for an end-of-call the service accepted, 0 for any other webhook request (a prefetch, a 401):
# its mean over silence_hours is 0 exactly when calls arrive but no end-of-call is accepted, and it
# has a point for every prefetch, so the silence alert needs no absence condition (which is met
# only after a first point: https://cloud.google.com/monitoring/alerts/metric-absence) and fires
# for an end-of-call URL that was wrong from day one.
resource "google_logging_metric" "end_of_call_accepted" {
  project         = var.project_id
  name            = "${var.service_name}/end_of_call_accepted"
  filter          = "${local.webhook_line} AND jsonPayload.route=~\"^/(prefetch|end-of-call)$\""
  value_extractor = "EXTRACT(jsonPayload.end_of_call_accepted)"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
  }
  bucket_options {
    explicit_buckets {
      bounds = [0.5]
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "dead_letters" {
  project = var.project_id
  name    = "${var.service_name}/dead_letters"
  filter  = "${local.service_filter} AND ${local.service_log} AND jsonPayload.message=\"call kept as a dead letter\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.enabled]
}

# An alert policy on a log-based metric created moments before is refused ("Cannot find metric(s)
# ... it could take up to 10 minutes to become available",
# https://github.com/hashicorp/terraform-provider-google/issues/11102): the policies that read
# these metrics wait this long after them. A new or renamed metric waits again; other changes do not.
resource "time_sleep" "log_metrics_propagate" {
  create_duration = var.log_metric_propagation_wait

  triggers = {
    metrics = join(",", [
      google_logging_metric.webhook_requests.id,
      google_logging_metric.prefetch_latency.id,
      google_logging_metric.end_of_call_accepted.id,
      google_logging_metric.dead_letters.id,
    ])
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "${var.service_name}: calls kept as dead letters"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "dead letters written"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.dead_letters.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      BigQuery did not take some calls; they are safe in Firestore (`dead_letters`).
      The replay job retries every run of `${var.replay_schedule}`. Check BigQuery's status and the
      service's logs (`call kept as a dead letter`, its `reason`). If the replay job starts failing
      too, BigQuery has refused calls for over an hour: run `scripts/replay.py --dry-run` to see
      the errors. No action is needed when this clears by itself.
    EOT
  }

  depends_on = [time_sleep.log_metrics_propagate]
}

resource "google_monitoring_alert_policy" "server_errors" {
  project               = var.project_id
  display_name          = "${var.service_name}: 5xx answers"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "5xx rate"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.service_name}\" AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_5xx_per_minute / 60
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_RATE"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The service answers 5xx. Prefetch never does by design, so these are end-of-call 503s
      (BigQuery **and** Firestore failing: Millis should retry; or `busy`, logged as "end-of-call
      refused: busy", when an instance already serves its END_OF_CALL_MAX_IN_FLIGHT end-of-calls,
      usually because BigQuery is slow: Millis retries after Retry-After) or the platform
      (instances crashing, out of memory). Check the service's logs and Cloud Run's revision status; roll
      back with `gcloud run services update-traffic ${var.service_name} --to-revisions=PREVIOUS=100`.
    EOT
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "end_of_call_503" {
  project               = var.project_id
  display_name          = "${var.service_name}: end-of-call could not be stored"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "end-of-call 503"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.webhook_requests.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.route=\"/end-of-call\" AND metric.labels.status=\"503\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      End-of-call answered 503: BigQuery and the Firestore dead-letter store both failed, so the
      call was not stored and depends on Millis retrying. Check both services' status and the
      logs (`call lost unless the caller retries`). Once they recover, run
      `scripts/backfill.py --from <day> --to <day>` to fetch the affected calls from Millis.
    EOT
  }

  depends_on = [time_sleep.log_metrics_propagate]
}

resource "google_monitoring_alert_policy" "prefetch_latency" {
  project               = var.project_id
  display_name          = "${var.service_name}: prefetch near its deadline"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "prefetch p99 latency"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.prefetch_latency.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.prefetch_deadline_ms * 0.8 / 1000
      duration        = "600s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Prefetch p99 is above 80 % of its ${var.prefetch_deadline_ms} ms deadline: callers are
      waiting and some answers come from cache or agent defaults. Usual causes: Firestore slow
      or throttled, instances saturated (CPU), cold starts (raise `min_instances`). See the
      dashboard's latency and instance panels.
    EOT
  }

  depends_on = [time_sleep.log_metrics_propagate]
}

resource "google_monitoring_alert_policy" "replay_failures" {
  project               = var.project_id
  display_name          = "${var.service_name}: dead letters waiting too long"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "replay job execution failed"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/job/completed_execution_count\" AND resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"${google_cloud_run_v2_job.replay.name}\" AND metric.labels.result=\"failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "900s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The replay job failed: dead letters older than ${var.replay_alert_after_minutes} minutes
      remain (or the job itself could not run). Their calls are safe in Firestore but missing
      from the cost views. Run `./scripts/replay.py --dry-run` to see each letter's
      error: BigQuery down or refusing (quota, permissions), or a row it rejects (open an issue
      with the error, never the row).
    EOT
  }
}

resource "google_monitoring_alert_policy" "silence" {
  project               = var.project_id
  display_name          = "${var.service_name}: calls but no end-of-call accepted"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "no accepted end-of-call among the webhook requests"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.end_of_call_accepted.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_LT"
      threshold_value = 0.000001
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.silence_hours * 3600}s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_MEAN"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Webhook requests arrive (prefetches, or end-of-calls refused) but for ${var.silence_hours}
      hours not one end-of-call was accepted: the end-of-call URL in Millis is wrong, was never
      set, or lost its token (check *Webhook settings* or the agent's `session_data_webhook`, and
      the "unauthorized webhook requests" alert). Calls made meanwhile can be recovered with
      `scripts/backfill.py`.
    EOT
  }

  depends_on = [time_sleep.log_metrics_propagate]
}

resource "google_monitoring_alert_policy" "unauthorized" {
  project               = var.project_id
  display_name          = "${var.service_name}: webhook requests refused (401/403)"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "401 or 403 answers"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.webhook_requests.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.status=one_of(\"401\", \"403\")"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_unauthorized_per_10_minutes
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      More than ${var.alert_unauthorized_per_10_minutes} webhook requests in 10 minutes were
      refused for a missing or wrong token (401) or signature (403). If Millis sends them, its
      webhook settings carry an old token or URL: compare them with
      `terraform output -raw end_of_call_webhook_url` (and the prefetch URL). Its calls are not
      stored meanwhile; recover them with `scripts/backfill.py` once fixed. A short burst from an
      unknown client is a scan, which the token stops.
    EOT
  }

  depends_on = [time_sleep.log_metrics_propagate]
}

resource "google_monitoring_dashboard" "service" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboards/service.json", {
    service_name = var.service_name
    replay_job   = google_cloud_run_v2_job.replay.name
  })

  depends_on = [
    google_project_service.enabled,
    google_logging_metric.webhook_requests,
    google_logging_metric.prefetch_latency,
    google_logging_metric.end_of_call_accepted,
    google_logging_metric.dead_letters,
  ]
}
