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
  })
  default = {}
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
