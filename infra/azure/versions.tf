terraform {
  # Same floor as infra/aws; nothing newer is needed.
  required_version = ">= 1.5.7"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # Pinned exactly: the schema of every resource here was checked against
      # @cdktf/provider-azurerm@14.23.1, which was generated from azurerm 4.55.0
      # (package.json "cdktf.provider.version"). See README.md.
      version = "= 4.55.0"
    }
  }
}

provider "azurerm" {
  # null: taken from ARM_SUBSCRIPTION_ID (or the Azure CLI login). Never hard-coded.
  subscription_id = var.subscription_id

  # Shared keys are disabled on the storage accounts: the provider must neither
  # fetch account keys nor call the storage data plane. Containers are created
  # through Azure Resource Manager (storage_account_id).
  storage_use_azuread = true

  features {
    storage {
      data_plane_available = false
    }
  }
}
