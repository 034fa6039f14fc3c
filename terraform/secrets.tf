# The secret's value never passes through Terraform (it would sit in the state in clear):
# the README's deploy guide adds it with `gcloud secrets versions add`.
resource "google_secret_manager_secret" "webhook_secrets" {
  project   = var.project_id
  secret_id = local.webhook_secret

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}
