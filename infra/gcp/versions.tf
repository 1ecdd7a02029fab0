terraform {
  # 1.9: the validation of push_to_function refers to create_worker_subscription
  # (a validation may refer to other variables since Terraform 1.9).
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Pinned exactly: the schema of every resource here was checked against
      # @cdktf/provider-google@16.12.1, which was generated from google 6.50.0
      # (package.json "cdktf.provider.version"). See README.md.
      version = "= 6.50.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge(
    {
      project    = "adder"
      stack      = var.name
      managed-by = "terraform"
    },
    var.labels,
  )
}
