variable "project_id" {
  description = "The Google Cloud project to deploy into (its id, not its number)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id such as my-project-123 (6-30 lower-case letters, digits and hyphens)."
  }
}

variable "region" {
  description = "Region of the function, the Cloud Run services, the Cloud Tasks queue and the source bucket."
  type        = string
  default     = "europe-west1"
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as europe-west1, or a multi-region such as eur3). Cannot be changed once created."
  type        = string
  default     = "eur3"
}

variable "name_prefix" {
  description = "Prefix of every resource name; the topics become <prefix>-events, <prefix>-quarantine and <prefix>-<route>-dead-letter, the names the handlers derive from TOPIC_PREFIX."
  type        = string
  default     = "supaglue"

  validation {
    # Service account ids are at most 30 characters: the prefix plus "-backfill-worker".
    condition     = can(regex("^[a-z][a-z0-9-]{1,12}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-14 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "handler_image" {
  description = "Container image of the handler services, built from handlers/Dockerfile (make deploy builds and passes it), e.g. europe-west1-docker.pkg.dev/PROJECT/supaglue/handlers:TAG."
  type        = string

  validation {
    condition     = length(trimspace(var.handler_image)) > 0
    error_message = "handler_image must name an image; run make deploy, which builds one."
  }
}

variable "hook_modules" {
  description = "Python modules whose import registers your transform, cleanup and backfill hooks (handlers/hooks.py); empty runs only the built-in alerts and bookkeeping."
  type        = list(string)
  default     = []
}

variable "hook_events" {
  description = "Event types your hooks receive on the hooks route (HOOK_EVENTS), exact (sync.complete) or a prefix ending in * (entity.*). Terraform builds the route's subscription filter from them; empty creates no subscription, so the hooks service receives nothing."
  type        = list(string)
  default     = []

  validation {
    # ASCII without quotes or backslashes: safe inside the filter's string literals, and its
    # length in characters is its length in bytes (Pub/Sub's limit is in bytes).
    condition     = alltrue([for t in var.hook_events : can(regex("^[A-Za-z0-9_.-]+\\*?$|^\\*$", t))])
    error_message = "hook_events must be event types such as sync.complete, or prefixes such as entity.* (letters, digits, '.', '_', '-', with '*' only at the end)."
  }
  validation {
    condition     = length(distinct(var.hook_events)) == length(var.hook_events)
    error_message = "hook_events lists an event type twice."
  }
}

locals {
  # Environment variables a handler service already has, or that its runtime reads: a hook's
  # setting or secret may not take one of these names, nor begin with one of these prefixes.
  # (tests/terraform checks that every name the settings classes read and Terraform sets is here.)
  reserved_env_names = toset([
    "SERVICE", "PORT", "THREADS", "TOPIC_PREFIX", "REPEATED_FAILURE_THRESHOLD",
    "PUBLISH_TIMEOUT_SECONDS", "CLAIM_EVERY_DELIVERY", "PATH", "HOME",
  ])
  reserved_env_prefixes = toset([
    "GOOGLE_", "PUSH_", "HOOK_", "TASKS_", "BACKFILL_", "LEDGER_", "FIRESTORE_", "PUBSUB_",
    "CLOUD_TASKS_", "CLOUD_RUN_", "K_", "X_GOOGLE_", "PYTHON", "GUNICORN_", "SUPAGLUE_",
    "RECONCILE_",
  ])
  # A reserved name, or one that starts with a reserved prefix (all of them [A-Z_]: no escaping).
  reserved_env_regex = "^(${join("|", local.reserved_env_names)})$|^(${join("|", local.reserved_env_prefixes)})"
  reserved_env_help  = "${join(", ", sort(local.reserved_env_names))}, or ${join(", ", [for p in sort(local.reserved_env_prefixes) : "${p}*"])}. Give your hook's settings a prefix of its own (e.g. CRM_)."
  env_name_regex     = "^[A-Z][A-Z0-9_]*$"
  # Secret Manager's secret ids: letters, digits, '-' and '_', at most 255.
  secret_id_regex = "^[A-Za-z0-9_-]{1,255}$"
}

variable "hook_settings" {
  description = "Plain settings of your hooks: environment variable name => value, set on every handler service (each hook module's pydantic-settings class reads its own prefix). Secrets go in hook_secrets."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.hook_settings) : can(regex(local.env_name_regex, name))])
    error_message = "hook_settings names must be environment variable names: upper-case letters, digits and '_', starting with a letter (e.g. CRM_BASE_URL)."
  }
  validation {
    condition     = alltrue([for name in keys(var.hook_settings) : !can(regex(local.reserved_env_regex, name))])
    error_message = "hook_settings names must not be, or start like, a variable the services already read: ${local.reserved_env_help}"
  }
}

variable "hook_secrets" {
  description = "Secret settings of your hooks: environment variable name => id of a Secret Manager secret in this project that you create and fill with gcloud (README, Deploy). Every handler service reads its latest version at start-up, and may read only these secrets."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.hook_secrets) : can(regex(local.env_name_regex, name))])
    error_message = "hook_secrets names must be environment variable names: upper-case letters, digits and '_', starting with a letter (e.g. CRM_API_TOKEN)."
  }
  validation {
    condition     = alltrue([for name in keys(var.hook_secrets) : !can(regex(local.reserved_env_regex, name))])
    error_message = "hook_secrets names must not be, or start like, a variable the services already read: ${local.reserved_env_help}"
  }
  validation {
    condition     = length(setintersection(keys(var.hook_secrets), keys(var.hook_settings))) == 0
    error_message = "A name is in both hook_settings and hook_secrets: ${join(", ", setintersection(keys(var.hook_secrets), keys(var.hook_settings)))}."
  }
  validation {
    condition     = alltrue([for id in values(var.hook_secrets) : can(regex(local.secret_id_regex, id))])
    error_message = "hook_secrets values must be Secret Manager secret ids in this project (letters, digits, '-' and '_'), such as crm-api-token; not a resource name or a value."
  }
}

variable "ingest" {
  description = "Sizing of the ingest function. Concurrency above 1 needs at least one CPU."
  # An async function: one worker (WORKERS, default 1) runs one event loop that serves every
  # request of the instance, most of them only waiting for Pub/Sub's confirmation; so one
  # CPU, which that single loop can use, and many requests per instance (40 cover a few
  # thousand webhooks/s at Pub/Sub round trips of 10 ms). The memory bound is the body: a
  # request holds up to about twice MAX_BODY_BYTES while it is read, and 40 of those fit in
  # 1 GiB beside the process itself (about 100 MiB).
  type = object({
    max_instances   = optional(number, 20)
    min_instances   = optional(number, 0)
    concurrency     = optional(number, 40)
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    timeout_seconds = optional(number, 30)
  })
  default = {}

  validation {
    condition     = var.ingest.max_instances >= 1 && var.ingest.min_instances >= 0 && var.ingest.min_instances <= var.ingest.max_instances
    error_message = "ingest.max_instances must be at least 1 and not below ingest.min_instances."
  }
  validation {
    condition     = var.ingest.concurrency >= 1 && var.ingest.concurrency <= 1000
    error_message = "ingest.concurrency must be between 1 and 1000."
  }
  validation {
    # The function answers within its own publish timeout (at most 12 s); Svix gives up at 15 s.
    condition     = var.ingest.timeout_seconds >= 15 && var.ingest.timeout_seconds <= 60
    error_message = "ingest.timeout_seconds must be between 15 and 60."
  }
}

variable "handlers" {
  description = "Sizing of each handler service and the backfill worker."
  type = object({
    max_instances   = optional(number, 10)
    concurrency     = optional(number, 8)
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    timeout_seconds = optional(number, 60)
  })
  default = {}

  validation {
    # The push subscription's ack deadline is this plus 30 s, and Pub/Sub allows at most 600 s.
    condition     = var.handlers.timeout_seconds >= 10 && var.handlers.timeout_seconds <= 570
    error_message = "handlers.timeout_seconds must be between 10 and 570."
  }
  validation {
    condition     = var.handlers.max_instances >= 1 && var.handlers.concurrency >= 1
    error_message = "handlers.max_instances and handlers.concurrency must be at least 1."
  }
}

variable "delivery" {
  description = "How Pub/Sub retries a push that failed, and when it gives up and dead-letters."
  type = object({
    max_delivery_attempts = optional(number, 10)
    minimum_backoff       = optional(string, "10s")
    maximum_backoff       = optional(string, "600s")
    # Seven days: the window `python -m ops replay --since` can seek back into.
    message_retention = optional(string, "604800s")
  })
  default = {}

  validation {
    condition     = var.delivery.max_delivery_attempts >= 5 && var.delivery.max_delivery_attempts <= 100
    error_message = "delivery.max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
  validation {
    condition     = can(regex("^[0-9]+s$", var.delivery.minimum_backoff)) && can(regex("^[0-9]+s$", var.delivery.maximum_backoff)) && can(regex("^[0-9]+s$", var.delivery.message_retention))
    error_message = "delivery durations are whole seconds with an s suffix, such as 10s."
  }
}

variable "backfills" {
  description = "The backfill queue's dispatch limits and the worker's budget per chunk."
  type = object({
    max_dispatches_per_second = optional(number, 5)
    max_concurrent_dispatches = optional(number, 4)
    max_attempts              = optional(number, 20)
    min_backoff               = optional(string, "10s")
    max_backoff               = optional(string, "600s")
    chunk_seconds             = optional(number, 240)
    chunk_max_records         = optional(number, 500)
  })
  default = {}

  validation {
    # The task's dispatch deadline is chunk_seconds + 60, and Cloud Tasks allows at most 1800 s.
    condition     = var.backfills.chunk_seconds >= 10 && var.backfills.chunk_seconds <= 1500
    error_message = "backfills.chunk_seconds must be between 10 and 1500."
  }
  validation {
    condition     = var.backfills.max_attempts >= 1 && var.backfills.max_concurrent_dispatches >= 1 && var.backfills.max_dispatches_per_second > 0
    error_message = "backfills.max_attempts, max_concurrent_dispatches and max_dispatches_per_second must be positive."
  }
}

variable "ledger_retention_days" {
  description = "How long the processed-events ledger remembers an event (Firestore TTL); redeliveries older than this would be applied again."
  type        = number
  default     = 30

  validation {
    condition     = var.ledger_retention_days >= 8
    error_message = "ledger_retention_days must be at least 8: Pub/Sub retains and may redeliver messages for 7 days."
  }
}

variable "alert_emails" {
  description = "E-mail addresses that receive every alert."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alert_emails must be e-mail addresses."
  }
}

variable "alert_thresholds" {
  description = "When alerts fire."
  type = object({
    # Dead-letter messages waiting longer than this page someone.
    dead_letter_max_age_seconds = optional(number, 300)
    # Rejected signatures per 5 minutes above which someone is probing the endpoint or a secret is wrong.
    signature_rejections_per_5m = optional(number, 20)
    # Ingest 5xx answers per 5 minutes: Pub/Sub refusing or timing out.
    ingest_5xx_per_5m = optional(number, 5)
    # The Nth consecutive failed sync of a (customer, provider, object) raises the CRITICAL
    # alert sync_failed_repeatedly (REPEATED_FAILURE_THRESHOLD on the alerts service).
    repeated_sync_failures = optional(number, 3)
    # An event waiting longer than this on a route's push subscription: its handler is failing.
    backlog_max_age_seconds = optional(number, 900)
    # Ingest refusing most requests: more than this share of them answered other than 2xx over
    # the last ingest_refused_minutes, for as long, with at least ingest_refused_min_requests
    # refused in the window.
    ingest_refused_ratio        = optional(number, 0.5)
    ingest_refused_minutes      = optional(number, 30)
    ingest_refused_min_requests = optional(number, 5)
  })
  default = {}

  validation {
    condition     = var.alert_thresholds.repeated_sync_failures >= 2 && floor(var.alert_thresholds.repeated_sync_failures) == var.alert_thresholds.repeated_sync_failures
    error_message = "alert_thresholds.repeated_sync_failures must be a whole number of at least 2 (the first failure already raises sync_failed)."
  }
  validation {
    # One retry's back-off is not a backlog: the age must outlast the longest wait Pub/Sub puts
    # between two attempts.
    condition     = floor(var.alert_thresholds.backlog_max_age_seconds) == var.alert_thresholds.backlog_max_age_seconds && var.alert_thresholds.backlog_max_age_seconds > tonumber(trimsuffix(var.delivery.maximum_backoff, "s"))
    error_message = "alert_thresholds.backlog_max_age_seconds must be whole seconds above delivery.maximum_backoff (${var.delivery.maximum_backoff}), the longest Pub/Sub waits between two attempts."
  }
  validation {
    condition     = var.alert_thresholds.ingest_refused_ratio > 0 && var.alert_thresholds.ingest_refused_ratio < 1
    error_message = "alert_thresholds.ingest_refused_ratio must be a share between 0 and 1 (0.5: most requests)."
  }
  validation {
    # Svix disables an endpoint after 5 days of failures: the alert must come within hours.
    condition     = floor(var.alert_thresholds.ingest_refused_minutes) == var.alert_thresholds.ingest_refused_minutes && var.alert_thresholds.ingest_refused_minutes >= 5 && var.alert_thresholds.ingest_refused_minutes <= 360
    error_message = "alert_thresholds.ingest_refused_minutes must be a whole number of minutes from 5 to 360."
  }
  validation {
    condition     = floor(var.alert_thresholds.ingest_refused_min_requests) == var.alert_thresholds.ingest_refused_min_requests && var.alert_thresholds.ingest_refused_min_requests >= 1
    error_message = "alert_thresholds.ingest_refused_min_requests must be a whole number of at least 1."
  }
}

variable "runbook_url" {
  description = "Where your team reads this repository's README (e.g. https://github.com/acme/supaglue-gcp/blob/main/README.md); every alert's documentation links its entry under the README's Runbook there, as <runbook_url>#<heading anchor>."
  type        = string
  default     = "README.md"

  validation {
    condition     = (var.runbook_url == "README.md" || startswith(var.runbook_url, "https://")) && !strcontains(var.runbook_url, "#")
    error_message = "runbook_url must be an https:// URL of the README without a #fragment (each alert appends its runbook entry's anchor), or README.md."
  }
}

variable "alert_channels" {
  description = "Notification channels beside alert_emails; every alert notifies every channel. Secrets are Secret Manager secret ids in this project that you fill with gcloud (README, Deploy): Terraform reads them ephemerally and sends them as write-only labels, so they never land in its state. A *_version pins the secret version read; change it to send a new one to the channel."
  type = object({
    # Cloud Monitoring's "slack" channel: the channel and the Slack app's OAuth token.
    slack = optional(object({
      channel_name       = string
      auth_token_secret  = string
      auth_token_version = optional(string, "latest")
    }))
    # "pagerduty": the integration key of a PagerDuty service (Events API v2).
    pagerduty = optional(object({
      service_key_secret  = string
      service_key_version = optional(string, "latest")
    }))
    # A generic webhook: with username and password_secret it is "webhook_basicauth";
    # without, "webhook_tokenauth", whose token is part of the URL (and so of the state:
    # the provider has no write-only URL).
    webhook = optional(object({
      url              = string
      username         = optional(string)
      password_secret  = optional(string)
      password_version = optional(string, "latest")
    }))
  })
  default = {}

  validation {
    condition     = var.alert_channels.slack == null || can(regex("^#?[a-z0-9_-]{1,80}$", var.alert_channels.slack.channel_name))
    error_message = "alert_channels.slack.channel_name must be a Slack channel name such as #oncall."
  }
  validation {
    condition     = var.alert_channels.webhook == null || startswith(try(var.alert_channels.webhook.url, ""), "https://")
    error_message = "alert_channels.webhook.url must be an https:// URL."
  }
  validation {
    condition     = var.alert_channels.webhook == null || (try(var.alert_channels.webhook.username, null) == null) == (try(var.alert_channels.webhook.password_secret, null) == null)
    error_message = "alert_channels.webhook takes username and password_secret together (basic auth), or neither (token auth: the token in the URL)."
  }
  validation {
    condition = alltrue([
      for id in compact([
        try(var.alert_channels.slack.auth_token_secret, ""),
        try(var.alert_channels.pagerduty.service_key_secret, ""),
        try(var.alert_channels.webhook.password_secret, ""),
      ]) : can(regex(local.secret_id_regex, id))
    ])
    error_message = "alert_channels secrets (auth_token_secret, service_key_secret, password_secret) must be Secret Manager secret ids in this project, such as slack-alerts-token; never the secret itself."
  }
  validation {
    condition = alltrue([
      for v in compact([
        try(var.alert_channels.slack.auth_token_version, ""),
        try(var.alert_channels.pagerduty.service_key_version, ""),
        try(var.alert_channels.webhook.password_version, ""),
      ]) : v == "latest" || can(regex("^[1-9][0-9]*$", v))
    ])
    error_message = "alert_channels *_version values must be \"latest\" or a version number."
  }
}

variable "deletion_protection" {
  description = "Protect the Firestore database and the Cloud Run services from terraform destroy."
  type        = bool
  default     = true
}

variable "webhook_secret_version" {
  description = "Which version of the webhook-secrets secret the function reads. \"latest\" is read when an instance starts; a number pins it, and changing it starts a new revision (README, Rotate the signing secret)."
  type        = string
  default     = "latest"

  validation {
    condition     = var.webhook_secret_version == "latest" || can(regex("^[1-9][0-9]*$", var.webhook_secret_version))
    error_message = "webhook_secret_version must be \"latest\" or a version number."
  }
}

variable "reconciler" {
  description = "The reconciler: how often Cloud Scheduler starts a pass, Supaglue's management API, and a pass's budgets (README, The reconciler)."
  type = object({
    schedule            = optional(string, "*/15 * * * *")
    api_url             = optional(string, "https://api.supaglue.io")
    overlap_seconds     = optional(number, 3600)
    settle_seconds      = optional(number, 600)
    page_size           = optional(number, 100)
    max_requests        = optional(number, 200)
    time_budget_seconds = optional(number, 240)
  })
  default = {}

  validation {
    # The scheduler waits at most 30 minutes for an HTTP target: the budget plus 60 s fits.
    condition     = var.reconciler.time_budget_seconds >= 30 && var.reconciler.time_budget_seconds <= 1700
    error_message = "reconciler.time_budget_seconds must be between 30 and 1700."
  }
  validation {
    condition     = var.reconciler.page_size >= 1 && var.reconciler.page_size <= 1000 && var.reconciler.max_requests >= 1
    error_message = "reconciler.page_size must be between 1 and 1000, and max_requests at least 1."
  }
  validation {
    condition     = can(regex("^https://", var.reconciler.api_url))
    error_message = "reconciler.api_url must be an https:// URL."
  }
}

variable "supaglue_api_key_version" {
  description = "Which version of the supaglue-api-key secret the reconciler reads: \"latest\" when an instance starts, or a version number."
  type        = string
  default     = "latest"

  validation {
    condition     = var.supaglue_api_key_version == "latest" || can(regex("^[1-9][0-9]*$", var.supaglue_api_key_version))
    error_message = "supaglue_api_key_version must be \"latest\" or a version number."
  }
}

variable "archive" {
  description = "The archive of every event on the events topic (a Cloud Storage subscription), kept past Pub/Sub's retention for `ops replay --from-archive`."
  type = object({
    retention_days = optional(number, 400)
    # A new file at least this often (Pub/Sub allows 1 to 10 minutes).
    max_duration = optional(string, "300s")
  })
  default = {}

  validation {
    condition     = var.archive.retention_days >= 32
    error_message = "archive.retention_days must be at least 32: the archive is for what Pub/Sub (at most 31 days) no longer keeps."
  }
}
