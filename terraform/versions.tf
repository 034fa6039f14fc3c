terraform {
  # optional() object attributes with defaults, and endswith() in routing.tf.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
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
