terraform {
  # Same floor as infra/aws; nothing newer is needed (optional() defaults,
  # preconditions and provider-defined functions are not used).
  required_version = ">= 1.5.7"

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
