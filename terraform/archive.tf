# Every event on the events topic, archived past Pub/Sub's retention (at most 31 days) by a
# Cloud Storage subscription: Avro files with each message's attributes, publish time and id,
# which `python -m ops replay --from-archive` reads back (ops/cli/archive.py).

resource "google_storage_bucket" "archive" {
  #checkov:skip=CKV_GCP_62:Access logs for an archive only Pub/Sub writes and operators read; Cloud Audit Logs cover reads if enabled.
  #checkov:skip=CKV_GCP_78:Files are written once and never changed; versions would outlive the lifecycle rule that ends the retention.
  project                     = var.project_id
  name                        = local.archive_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  lifecycle_rule {
    condition {
      age = var.archive.retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "archive" {
  project = var.project_id
  name    = local.archive_subscription
  topic   = google_pubsub_topic.events.id

  message_retention_duration = var.delivery.message_retention

  expiration_policy {
    ttl = ""
  }

  cloud_storage_config {
    bucket          = google_storage_bucket.archive.name
    filename_prefix = "events/"
    filename_suffix = ".avro"
    max_duration    = var.archive.max_duration

    avro_config {
      # The attributes, message id and publish time beside the data: what a replay needs.
      write_metadata = true
    }
  }

  # Pub/Sub checks its access to the bucket when the subscription is created.
  depends_on = [
    google_storage_bucket_iam_member.agent_writes_archive,
    google_storage_bucket_iam_member.agent_reads_archive_bucket,
  ]
}
