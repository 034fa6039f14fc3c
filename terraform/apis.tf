locals {
  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = var.project_id
  service = each.value
  # Other workloads in the project may use these APIs too; destroying this deployment must not
  # switch them off.
  disable_on_destroy = false
}

data "google_project" "main" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.main.number
  # Cloud Run's deterministic URL (https://SERVICE-PROJECT_NUMBER.REGION.run.app): known before
  # the service exists, so a service can be told its own URL (its OIDC audience) without a cycle.
  run_urls = {
    for service, name in local.run_service_names :
    service => "https://${name}-${local.project_number}.${var.region}.run.app"
  }
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
