variable "project_id" {
  description = "Google Cloud project to deploy into (an existing project with billing enabled)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project id (6-30 lower-case letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the Cloud Run service, the Artifact Registry repository and Cloud Build; the data locations follow it unless set."
  type        = string
  default     = "us-central1"
}

variable "service_name" {
  description = "Name of the Cloud Run service (also used for the registry repository and the service accounts)."
  type        = string
  default     = "millis-webhooks"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,40}[a-z0-9])?$", var.service_name))
    error_message = "service_name must be lower-case letters, digits and hyphens, at most 42 characters."
  }
}

variable "firestore_database" {
  description = "Firestore database id. \"(default)\" uses (or creates) the project's default database."
  type        = string
  default     = "(default)"
}

variable "create_firestore_database" {
  description = "Create the Firestore database. Set false when the project already has it."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Location of the Firestore database. Null (the default) derives it from region (terraform/README.md, \"Data location\"): nam5 for a US region, eur3 for a region in the EU, the region itself elsewhere."
  type        = string
  default     = null
}

variable "bigquery_dataset" {
  description = "BigQuery dataset that holds the call_events table and the cost views."
  type        = string
  default     = "millis"

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.bigquery_dataset))
    error_message = "bigquery_dataset may contain letters, digits and underscores only."
  }
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset. Null (the default) derives it from region: US for a US region, EU for a region in the EU, the region itself elsewhere."
  type        = string
  default     = null
}

variable "allow_data_outside_region" {
  description = "Accept a bigquery_location or firestore_location outside the geography of region (refused otherwise, so that data never leaves it by accident)."
  type        = bool
  default     = false
}

variable "bigquery_time_travel_hours" {
  description = "BigQuery time travel window of the dataset in hours (48 to 168, a multiple of 24): erased or changed rows stay readable this long, then 7 more days of fail-safe recoverable by Google only (docs/operations.md, \"Personal data\")."
  type        = number
  default     = 168

  validation {
    condition     = var.bigquery_time_travel_hours >= 48 && var.bigquery_time_travel_hours <= 168 && var.bigquery_time_travel_hours % 24 == 0
    error_message = "bigquery_time_travel_hours must be 48, 72, 96, 120, 144 or 168."
  }
}

variable "firestore_point_in_time_recovery" {
  description = "Firestore point-in-time recovery: true keeps every document's versions for 7 days (erased profiles and dead letters stay recoverable that long); false keeps 1 hour."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the BigQuery table and the Firestore database from `terraform destroy`."
  type        = bool
  default     = true
}

variable "webhook_token" {
  description = "Shared secret Millis sends with each webhook. Leave null to generate a random one (read it with `terraform output -raw webhook_token`)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.webhook_token == null || length(coalesce(var.webhook_token, "x")) >= 24
    error_message = "webhook_token must be at least 24 characters."
  }
}

variable "image" {
  description = "Container image of the first deployment. Cloud Build deploys every later image; Terraform ignores the image after creation."
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/hello"
}

variable "min_instances" {
  description = "Instances kept warm so the prefetch webhook never waits on a cold start. 0 saves cost and accepts cold starts of about a second."
  type        = number
  default     = 1

  validation {
    condition     = var.min_instances >= 0 && var.min_instances <= 100
    error_message = "min_instances must be between 0 and 100."
  }
}

variable "max_instances" {
  description = "Upper bound on instances (bounds cost and the load on Firestore and BigQuery)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be between 1 and 1000."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once. Both webhooks mostly wait on Firestore or BigQuery, so one CPU serves many."
  type        = number
  default     = 40

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "cpu" {
  description = "CPU limit of an instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit of an instance. Measured (bench/run memory, docs/performance.md): about 100 MiB after mixed traffic, at most 334 MiB while 40 end-of-calls of 2.5 MB arrive at once (the guard admits 24 MiB of bodies at a time); 512Mi leaves half as much again."
  type        = string
  default     = "512Mi"

  validation {
    condition     = !can(regex("^[0-9]+(Mi|Gi)$", var.memory)) ? false : (endswith(var.memory, "Gi") ? tonumber(trimsuffix(var.memory, "Gi")) * 1024 : tonumber(trimsuffix(var.memory, "Mi"))) >= 512
    error_message = "memory must be at least 512Mi (written as <n>Mi or <n>Gi): the measured peak is 334 MiB."
  }
}

variable "prefetch_deadline_ms" {
  description = "Budget of the prefetch lookup in milliseconds (PREFETCH_DEADLINE_MS)."
  type        = number
  default     = 500
}

variable "profile_cache_ttl_seconds" {
  description = "Seconds a profile read is reused: profile edits show up within this time (PROFILE_CACHE_TTL_SECONDS)."
  type        = number
  default     = 30
}

variable "extra_env" {
  description = "Other settings of the service by environment variable (the README's configuration table), e.g. { PREFETCH_MAX_CONCURRENT_READS = \"2\" }. Secrets do not belong here: tokens come from Secret Manager."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name in keys(var.extra_env) :
      can(regex("^[A-Z][A-Z0-9_]*$", name)) && !contains(["WEBHOOK_TOKENS", "WEBHOOK_SIGNING_SECRETS"], name)
    ])
    error_message = "extra_env names are upper-case environment variables; WEBHOOK_TOKENS and WEBHOOK_SIGNING_SECRETS come from Secret Manager."
  }
}

variable "default_phone_region" {
  description = "Region for phone numbers written without a country code (DEFAULT_PHONE_REGION)."
  type        = string
  default     = "US"
}

variable "store_agent_config" {
  description = "\"allowlist\" stores only the parts of the agent configuration people query (prompt, voice, model, tool names, descriptions and parameter schemas, webhook origins), their text redacted; \"redacted\" stores every field with the secrets detection finds removed; \"none\" drops it (STORE_AGENT_CONFIG)."
  type        = string
  default     = "allowlist"

  validation {
    condition     = contains(["redacted", "allowlist", "none"], var.store_agent_config)
    error_message = "store_agent_config must be \"redacted\", \"allowlist\" or \"none\"."
  }
}

variable "bigquery_write_api" {
  description = "How call rows reach BigQuery (BIGQUERY_WRITE_API): \"insert_all\" (legacy tabledata.insertAll) or \"storage_write\" (the Storage Write API's default stream)."
  type        = string
  default     = "storage_write"

  validation {
    condition     = contains(["insert_all", "storage_write"], var.bigquery_write_api)
    error_message = "bigquery_write_api must be \"insert_all\" or \"storage_write\"."
  }
}

variable "log_level" {
  description = "Log level of the service (LOG_LEVEL)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "github_owner" {
  description = "Owner of the GitHub repository for a Cloud Build trigger on pushes to main. Leave empty to build with `gcloud builds submit` only."
  type        = string
  default     = ""
}

variable "github_repository" {
  description = "Name of the GitHub repository for the Cloud Build trigger (with github_owner)."
  type        = string
  default     = ""
}

variable "labels" {
  description = "Labels put on every resource."
  type        = map(string)
  default     = { app = "millis-webhooks" }
}

variable "public_access" {
  description = "How the service is made public (Millis cannot send Google identity tokens; the app checks its own token): invoker_iam_disabled (Cloud Run's recommended way, works where the organisation restricts sharing to its domain) or all_users_binding (a roles/run.invoker binding for allUsers, the older way)."
  type        = string
  default     = "invoker_iam_disabled"

  validation {
    condition     = contains(["invoker_iam_disabled", "all_users_binding"], var.public_access)
    error_message = "public_access must be invoker_iam_disabled or all_users_binding."
  }
}

variable "iam_propagation_wait" {
  description = "Pause after granting the runtime account its roles, before the first revision starts (IAM changes take 2 to 7 minutes to propagate)."
  type        = string
  default     = "120s"

  validation {
    condition     = can(regex("^[0-9]+[sm]$", var.iam_propagation_wait))
    error_message = "iam_propagation_wait is a duration such as 120s or 3m."
  }
}

variable "lookup_signing_secrets" {
  description = "JSON map of Millis agent id to a secret (or a list of secrets during a rotation): those agents' lookup-key values count only when signed by your backend (README, Lookup keys). Null: no agent requires signatures."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.lookup_signing_secrets == null || can(keys(jsondecode(coalesce(var.lookup_signing_secrets, "{}"))))
    error_message = "lookup_signing_secrets must be null or a JSON object."
  }
}

variable "call_events_retention_days" {
  description = "Days a call's partition of call_events is kept (transcripts, phone numbers, costs) before BigQuery deletes it. Null (the default) keeps calls until erased with scripts/erase.py: cost history is usually wanted for years, and this is a decision for your privacy policy."
  type        = number
  default     = null

  validation {
    condition     = var.call_events_retention_days == null || coalesce(var.call_events_retention_days, 1) >= 1
    error_message = "call_events_retention_days must be null or at least 1."
  }
}

variable "replay_schedule" {
  description = "Cron schedule (UTC) of the dead-letter replay job."
  type        = string
  default     = "*/15 * * * *"
}

variable "replay_alert_after_minutes" {
  description = "The replay job fails (and alerts) while dead letters older than this remain."
  type        = number
  default     = 60

  validation {
    condition     = var.replay_alert_after_minutes >= 1
    error_message = "replay_alert_after_minutes must be at least 1."
  }
}

variable "memory_retention_days" {
  description = "Caller memory and its session markers are deleted this many days after the caller's last call (Firestore TTL, terraform/memory.tf)."
  type        = number
  default     = 365

  validation {
    condition     = var.memory_retention_days >= 1 && var.memory_retention_days <= 3650
    error_message = "memory_retention_days must be from 1 to 3650."
  }
}

variable "alert_email" {
  description = "Email address that receives the alerts (README, Operations). Null: the policies exist but notify nobody."
  type        = string
  default     = null

  validation {
    condition     = var.alert_email == null || can(regex("^[^@\\s]+@[^@\\s]+$", coalesce(var.alert_email, "x@y")))
    error_message = "alert_email must be an email address."
  }
}

variable "alert_5xx_per_minute" {
  description = "5xx answers per minute, sustained for 5 minutes, that alert."
  type        = number
  default     = 1
}

variable "silence_hours" {
  description = "Hours of prefetches without any end-of-call that alert (a broken end-of-call webhook setting in Millis)."
  type        = number
  default     = 6

  validation {
    condition     = var.silence_hours >= 1 && var.silence_hours <= 23
    error_message = "silence_hours must be between 1 and 23."
  }
}

variable "alert_unauthorized_per_10_minutes" {
  description = "Webhook requests answered 401 or 403 in 10 minutes that alert (a token or URL set wrong in Millis)."
  type        = number
  default     = 5

  validation {
    condition     = var.alert_unauthorized_per_10_minutes >= 0
    error_message = "alert_unauthorized_per_10_minutes must be 0 or more."
  }
}

variable "log_metric_propagation_wait" {
  description = "Pause between creating the log-based metrics and the alert policies that read them (a new metric takes up to 10 minutes to become available)."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+[sm]$", var.log_metric_propagation_wait))
    error_message = "log_metric_propagation_wait is a duration such as 600s or 10m."
  }
}
