terraform {
  # 1.5.7 is the floor used by terraform-aws-modules; nothing newer is needed
  # (object optional() defaults, preconditions and check blocks all predate it).
  required_version = ">= 1.5.7"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Pinned exactly: this is the release held in the offline plugin mirror
      # (`terraform init -plugin-dir=/opt/tf-plugins`).
      version = "5.100.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(
      {
        project    = "adder"
        stack      = var.name
        managed-by = "terraform"
      },
      var.tags,
    )
  }
}
