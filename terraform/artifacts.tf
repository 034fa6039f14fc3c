# The handlers' image lives here; make deploy creates this repository first, then builds.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; CMEK needs a KMS key and key grants this module leaves to the organisation.
  project       = var.project_id
  location      = var.region
  repository_id = var.name_prefix
  format        = "DOCKER"
  description   = "Images of the Supaglue webhook handlers"

  # Every deploy pushes a new tag; keep the recent ones for rollback.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

# Cloud Build (as the build account) pushes the handler image and the function's image here.
# https://cloud.google.com/artifact-registry/docs/access-control#roles (roles/artifactregistry.writer)
resource "google_artifact_registry_repository_iam_member" "build_pushes" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}
