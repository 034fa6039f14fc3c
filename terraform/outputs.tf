output "ingest_url" {
  description = "Paste this into Supaglue's webhook settings (Svix endpoint URL)."
  value       = google_cloudfunctions2_function.ingest.url
}

output "webhook_secret_id" {
  description = "Secret Manager secret holding the signing secrets; add a version with gcloud (README, Deploy)."
  value       = google_secret_manager_secret.webhook_secrets.secret_id
}

output "topics" {
  description = "Pub/Sub topic ids: events, quarantine, and a dead-letter topic per route."
  value = {
    events       = google_pubsub_topic.events.name
    quarantine   = google_pubsub_topic.quarantine.name
    dead_letters = { for route, topic in google_pubsub_topic.dead_letter : route => topic.name }
  }
}

output "subscriptions" {
  description = "Push subscription per route, and the pull subscriptions for inspecting dead letters and quarantine."
  value = {
    push         = { for route, sub in google_pubsub_subscription.push : route => sub.name }
    dead_letters = { for route, sub in google_pubsub_subscription.dead_letter_watch : route => sub.name }
    quarantine   = google_pubsub_subscription.quarantine_watch.name
  }
}

output "service_urls" {
  description = "Cloud Run URLs of the handler services and the backfill worker (internal ingress: not reachable from the internet)."
  value       = { for service, svc in google_cloud_run_v2_service.handler : service => svc.uri }
}

output "tasks_queue" {
  description = "The Cloud Tasks queue that runs backfill chunks."
  value       = google_cloud_tasks_queue.backfills.id
}

output "artifact_repository" {
  description = "Where make deploy pushes the handlers' image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "supaglue_api_key_secret_id" {
  description = "Secret Manager secret holding Supaglue's management API key, which the reconciler reads; add a version with gcloud (README, Deploy)."
  value       = google_secret_manager_secret.supaglue_api_key.secret_id
}

output "archive" {
  description = "Where every event is archived past Pub/Sub's retention, for `python -m ops replay --from-archive`."
  value = {
    bucket       = google_storage_bucket.archive.name
    prefix       = "events/"
    subscription = google_pubsub_subscription.archive.name
  }
}

output "reconcile_jobs" {
  description = "The Cloud Scheduler job that starts each reconciliation pass."
  value       = { for service, job in google_cloud_scheduler_job.reconcile : service => job.id }
}

output "dashboard" {
  description = "The deployment's Cloud Monitoring dashboard (README, Dashboard), as projects/<number>/dashboards/<id>."
  value       = google_monitoring_dashboard.pipeline.id
}
