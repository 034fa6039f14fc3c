# The handler services and the backfill worker: one image (handlers/Dockerfile), one Cloud Run
# service each, the service chosen by SERVICE. Only Pub/Sub's push identity (and, for the worker,
# Cloud Tasks' identity) may invoke them (iam.tf); each also checks the caller's OIDC token.

locals {
  # What HandlerSettings (shared/settings.py) reads, beside SERVICE and the push identity set per
  # service below; a test checks the two agree.
  handler_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    TOPIC_PREFIX         = var.name_prefix
    FIRESTORE_DATABASE   = google_firestore_database.main.name
    HOOK_MODULES         = join(",", var.hook_modules)
    # The ledger's expires_at, by which Firestore's TTL policy (firestore.tf) deletes entries.
    LEDGER_RETENTION_DAYS = tostring(var.ledger_retention_days)
    # gunicorn threads (handlers/Dockerfile): one per request an instance accepts.
    THREADS = tostring(var.handlers.concurrency)
  }

  # Only the services that enqueue backfill chunks (local.backfill_services) get these.
  backfill_env = {
    TASKS_LOCATION             = var.region
    TASKS_QUEUE                = google_cloud_tasks_queue.backfills.name
    BACKFILL_WORKER_URL        = local.run_urls[local.worker_service]
    TASKS_SERVICE_ACCOUNT      = google_service_account.tasks.email
    BACKFILL_CHUNK_SECONDS     = tostring(var.backfills.chunk_seconds)
    BACKFILL_CHUNK_MAX_RECORDS = tostring(var.backfills.chunk_max_records)
  }
}

resource "google_cloud_run_v2_service" "handler" {
  for_each = local.handler_services

  project             = var.project_id
  name                = local.run_service_names[each.key]
  location            = var.region
  deletion_protection = var.deletion_protection
  # Pub/Sub push and Cloud Tasks from this project count as internal traffic.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account                  = google_service_account.handler[each.key].email
    timeout                          = "${each.key == local.worker_service ? local.worker_timeout_seconds : contains(local.reconciler_services, each.key) ? local.reconciler_timeout_seconds : var.handlers.timeout_seconds}s"
    max_instance_request_concurrency = var.handlers.concurrency

    scaling {
      max_instance_count = var.handlers.max_instances
    }

    containers {
      image = var.handler_image

      resources {
        limits = {
          cpu    = var.handlers.cpu
          memory = var.handlers.memory
        }
        # Setting limits would otherwise make CPU always allocated: bill only while serving.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "SERVICE"
        value = each.key
      }
      # The OIDC token's audience is the service's own URL, as its subscription (or, for the
      # worker, each task) sets it; the caller is Pub/Sub's or Cloud Tasks' identity.
      env {
        name  = "PUSH_AUDIENCE"
        value = local.run_urls[each.key]
      }
      # A claim outlives any attempt (an attempt cannot outrun the request timeout) but no
      # more: a crashed attempt's claim would otherwise turn redeliveries away until it ends,
      # spending delivery attempts (Pub/Sub) or retries (Cloud Tasks) on 503s.
      env {
        name  = "LEDGER_LEASE_SECONDS"
        value = tostring(each.key == local.worker_service ? local.worker_timeout_seconds : var.handlers.timeout_seconds + 30)
      }
      env {
        name  = "PUSH_SERVICE_ACCOUNT"
        value = contains(local.reconciler_services, each.key) ? google_service_account.scheduler.email : each.key == local.worker_service ? google_service_account.tasks.email : google_service_account.push.email
      }

      dynamic "env" {
        for_each = local.handler_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = contains(local.backfill_services, each.key) ? local.backfill_env : {}
        content {
          name  = env.key
          value = env.value
        }
      }

      # The hooks route's event types, as its subscription filter has them (routing.tf).
      dynamic "env" {
        for_each = contains(local.hook_event_services, each.key) ? { HOOK_EVENTS = join(",", var.hook_events) } : {}
        content {
          name  = env.key
          value = env.value
        }
      }

      # The reconciler (reconciler.tf): Supaglue's API and its budgets, and the API key.
      dynamic "env" {
        for_each = contains(local.reconciler_services, each.key) ? local.reconciler_env : {}
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = contains(local.reconciler_services, each.key) ? local.reconciler_secret_env : {}
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = var.supaglue_api_key_version
            }
          }
        }
      }

      # The alerts handler raises sync_failed_repeatedly at this many consecutive failures.
      dynamic "env" {
        for_each = contains(local.alerts_services, each.key) ? { REPEATED_FAILURE_THRESHOLD = tostring(var.alert_thresholds.repeated_sync_failures) } : {}
        content {
          name  = env.key
          value = env.value
        }
      }

      # Every service imports the hook modules at start-up, and each module validates its own
      # settings there: all of them get every hook setting and secret. The names are checked
      # against the ones above (variables.tf).
      dynamic "env" {
        for_each = var.hook_settings
        content {
          name  = env.key
          value = env.value
        }
      }

      # Read from Secret Manager when an instance starts (the value never passes through
      # Terraform); each service may read exactly these secrets (iam.tf).
      dynamic "env" {
        for_each = var.hook_secrets
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.handler_firestore,
    # A revision whose secret cannot be read does not start.
    google_secret_manager_secret_iam_member.handler_reads_hook_secrets,
    google_secret_manager_secret_iam_member.reconciler_reads_api_key,
  ]
}
