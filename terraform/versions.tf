terraform {
  # Ephemeral resources (1.10) and write-only arguments (1.11) keep the alert channels'
  # secrets out of the plan and the state (monitoring.tf); validations that read other
  # variables and locals (1.9); optional() attributes with defaults, endswith() (1.5).
  required_version = ">= 1.11"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.19: write-only sensitive_labels (auth_token_wo, service_key_wo, password_wo) on
      # google_monitoring_notification_channel; 7.11: the ephemeral
      # google_secret_manager_secret_version takes a short secret id and a project.
      version = ">= 7.19, < 8.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource carries these, so the deployment's cost and logs can be told apart.
  default_labels = {
    app = var.name_prefix
  }
}
