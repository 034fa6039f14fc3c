# The reconciler (handlers/reconcile/): a Cloud Run service of the handler image that Cloud
# Scheduler calls every 15 minutes with an OIDC token; each call is one pass that compares
# Supaglue's management API with what the pipeline recorded and publishes what no webhook
# brought. A scheduled call to a service, not a Cloud Run job: the pass is short and bounded,
# it reuses the handlers' image, settings, OIDC check and clients as one more service, and the
# scheduler's calls show up as requests with status codes, like every other service's.

# Supaglue's management API key. Its value never passes through Terraform: add it with
# `gcloud secrets versions add` (README, Deploy), as the signing secret.
resource "google_secret_manager_secret" "supaglue_api_key" {
  project   = var.project_id
  secret_id = local.supaglue_api_key_secret

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# The identity Cloud Scheduler calls the reconciler as; it may invoke that service only (iam.tf).
resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = local.scheduler_account
  display_name = "Cloud Scheduler identity: the OIDC token the reconciler accepts"
  depends_on   = [google_project_service.apis]
}

locals {
  # What ReconcilerSettings (shared/settings.py) adds to the handlers' settings; the key
  # comes from Secret Manager (handlers.tf).
  reconciler_env = {
    SUPAGLUE_API_URL              = var.reconciler.api_url
    RECONCILE_OVERLAP_SECONDS     = tostring(var.reconciler.overlap_seconds)
    RECONCILE_SETTLE_SECONDS      = tostring(var.reconciler.settle_seconds)
    RECONCILE_PAGE_SIZE           = tostring(var.reconciler.page_size)
    RECONCILE_MAX_REQUESTS        = tostring(var.reconciler.max_requests)
    RECONCILE_TIME_BUDGET_SECONDS = tostring(var.reconciler.time_budget_seconds)
  }
  reconciler_secret_env = {
    SUPAGLUE_API_KEY = google_secret_manager_secret.supaglue_api_key.secret_id
  }
}

resource "google_cloud_scheduler_job" "reconcile" {
  for_each = local.reconciler_services

  project          = var.project_id
  region           = var.region
  name             = local.reconcile_job
  description      = "One reconciliation pass: recover what Supaglue did that no webhook reported."
  schedule         = var.reconciler.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.reconciler_timeout_seconds}s"

  # A failed pass is not retried: the next scheduled one continues from the watermark.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_urls[each.key]}/reconcile"
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.run_urls[each.key]
    }
  }

  depends_on = [
    google_project_service.apis,
    google_cloud_run_v2_service_iam_member.invoker,
  ]
}
