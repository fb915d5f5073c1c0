terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Every argument and block here is checked against the schemas of 6.50.0, 7.41.0 and 8.7.0
      # (tests/infra, fixture from scripts/lib/provider_schema.py); 9.x is not checked yet.
      version = ">= 6.50, < 9.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.9.1, < 4.0"
    }
    time = {
      source  = "hashicorp/time"
      version = ">= 0.14.2, < 1.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = var.labels
}
