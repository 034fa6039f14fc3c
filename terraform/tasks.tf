# The backfill queue: the scheduler enqueues chunk tasks (named by backfill and chunk, so a
# duplicate is refused), Cloud Tasks calls the worker with the tasks account's OIDC token.
resource "google_cloud_tasks_queue" "backfills" {
  project  = var.project_id
  name     = local.tasks_queue
  location = var.region

  # Backfills call the CRM through Supaglue: keep them from competing with live syncs.
  rate_limits {
    max_dispatches_per_second = var.backfills.max_dispatches_per_second
    max_concurrent_dispatches = var.backfills.max_concurrent_dispatches
  }

  # A chunk that fails is retried with back-off; the worker resumes from its saved cursor.
  retry_config {
    max_attempts  = var.backfills.max_attempts
    min_backoff   = var.backfills.min_backoff
    max_backoff   = var.backfills.max_backoff
    max_doublings = 4
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
