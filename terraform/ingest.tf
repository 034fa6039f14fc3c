# The ingest function: Cloud Functions gen2, from an archive of ingest_fn/, shared/, the pinned
# requirements (local.ingest_source_files) and a root main.py, named by its hash so a change
# redeploys.

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Holds only build sources written by Terraform and Cloud Build; reads are covered by Cloud Audit Logs if enabled.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  # Old archives are only needed for a rollback soon after a deploy.
  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

data "archive_file" "ingest_source" {
  type        = "zip"
  output_path = "${path.module}/.build/ingest-source.zip"

  # The runtime loads main.py from the archive's root and puts that folder on sys.path; this one
  # only imports the function, so ingest_fn/ and shared/ import as packages, as they do in the repo.
  source {
    content  = local.ingest_entry_module
    filename = "main.py"
  }

  dynamic "source" {
    for_each = local.ingest_source_files
    content {
      content  = file("${path.module}/../${source.value}")
      filename = source.value
    }
  }
}

resource "google_storage_bucket_object" "ingest_source" {
  name   = "ingest/${data.archive_file.ingest_source.output_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.ingest_source.output_path
}

resource "google_cloudfunctions2_function" "ingest" {
  #checkov:skip=CKV_GCP_124:Svix delivers from the internet; every request is authenticated by its webhook signature before anything else.
  project     = var.project_id
  name        = local.ingest_function
  location    = var.region
  description = "Verifies Supaglue (Svix) webhooks and publishes them to Pub/Sub."

  build_config {
    runtime         = "python311"
    entry_point     = "ingest"
    service_account = google_service_account.build.id
    # The function's image goes to this deployment's repository, where the build may push.
    docker_repository = google_artifact_registry_repository.images.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.ingest_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.ingest.email
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    max_instance_count               = var.ingest.max_instances
    min_instance_count               = var.ingest.min_instances
    max_instance_request_concurrency = var.ingest.concurrency
    available_cpu                    = var.ingest.cpu
    available_memory                 = var.ingest.memory
    timeout_seconds                  = var.ingest.timeout_seconds

    # What IngestSettings (shared/settings.py) reads; a test checks the two agree.
    environment_variables = {
      GOOGLE_CLOUD_PROJECT = var.project_id
      EVENTS_TOPIC         = google_pubsub_topic.events.name
      QUARANTINE_TOPIC     = google_pubsub_topic.quarantine.name
    }

    secret_environment_variables {
      key        = "WEBHOOK_SECRETS"
      project_id = var.project_id
      secret     = google_secret_manager_secret.webhook_secrets.secret_id
      version    = var.webhook_secret_version
    }
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_storage_bucket_iam_member.build_reads_source,
    google_artifact_registry_repository_iam_member.build_pushes,
    google_secret_manager_secret_iam_member.ingest_reads_secret,
  ]
}

# Svix must reach the function without Google credentials: the webhook signature is its
# authentication, checked on the raw bytes before anything else.
resource "google_cloud_run_v2_service_iam_member" "ingest_public" {
  project  = var.project_id
  location = var.region
  # A gen2 function serves through the Cloud Run service of the same name; invoking it needs
  # run.invoker there (roles/cloudfunctions.invoker does not apply to gen2).
  name   = google_cloudfunctions2_function.ingest.name
  role   = "roles/run.invoker"
  member = "allUsers"
}
