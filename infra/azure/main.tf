data "azurerm_client_config" "current" {}

locals {
  resource_group_name = coalesce(var.resource_group_name, "rg-${var.name}")

  # Function app, Service Bus namespace and storage account names are global DNS
  # names; a stable suffix per subscription + resource group keeps them unique.
  suffix       = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${local.resource_group_name}"), 0, 6)
  compact_name = replace(var.name, "-", "")

  function_app_name         = "func-${var.name}-${local.suffix}"
  service_plan_name         = "asp-${var.name}"
  servicebus_namespace_name = "sb-${var.name}-${local.suffix}"
  host_storage_name         = "st${local.compact_name}fn${local.suffix}"
  results_storage_name      = "st${local.compact_name}res${local.suffix}"
  deployment_container_name = "app-package"

  # Fixed by docs/design.md: function_app.py (Python v2 model), Python 3.12.
  runtime_name    = "python"
  runtime_version = "3.12"

  # Identity-based Service Bus trigger: the SDK only needs the namespace host name.
  servicebus_fqdn = "${azurerm_servicebus_namespace.this.name}.servicebus.windows.net"

  # Lock duration >= function timeout (Service Bus caps it at 5 minutes); written
  # the way Service Bus returns it ("PT1M30S", "PT5M", "PT45S") to avoid diffs.
  lock_seconds  = min(300, var.function_timeout_seconds + 30)
  lock_minutes  = floor(local.lock_seconds / 60)
  lock_rest     = local.lock_seconds % 60
  lock_duration = local.lock_minutes == 0 ? "PT${local.lock_rest}S" : (local.lock_rest == 0 ? "PT${local.lock_minutes}M" : "PT${local.lock_minutes}M${local.lock_rest}S")

  function_timeout = format(
    "%02d:%02d:%02d",
    floor(var.function_timeout_seconds / 3600),
    floor(var.function_timeout_seconds % 3600 / 60),
    var.function_timeout_seconds % 60,
  )

  # Blobs are "{prefix}/{task_id}.out|.err", or "{task_id}.out|.err" with an empty prefix.
  results_key_prefix = var.results_prefix == "" ? "" : "${var.results_prefix}/"

  tags = merge(
    {
      project    = "adder"
      stack      = var.name
      managed-by = "terraform"
    },
    var.tags,
  )
}

resource "azurerm_resource_group" "this" {
  name     = local.resource_group_name
  location = var.location
  tags     = local.tags
}

#############
# Monitoring
#############

resource "azurerm_log_analytics_workspace" "this" {
  name                         = "log-${var.name}"
  resource_group_name          = azurerm_resource_group.this.name
  location                     = azurerm_resource_group.this.location
  sku                          = "PerGB2018"
  retention_in_days            = var.log_retention_days
  local_authentication_enabled = false
  tags                         = local.tags
}

# Workspace-based; ingestion needs an Entra ID token (local auth off), see the
# APPLICATIONINSIGHTS_AUTHENTICATION_STRING app setting and the role below.
resource "azurerm_application_insights" "this" {
  name                          = "appi-${var.name}"
  resource_group_name           = azurerm_resource_group.this.name
  location                      = azurerm_resource_group.this.location
  application_type              = "other"
  workspace_id                  = azurerm_log_analytics_workspace.this.id
  local_authentication_disabled = true
  tags                          = local.tags
}

##############
# Service Bus
##############

resource "azurerm_servicebus_namespace" "this" {
  #checkov:skip=CKV_AZURE_199:Double encryption with a customer-managed key needs the Premium tier; Standard encrypts at rest with Microsoft-managed keys.
  #checkov:skip=CKV_AZURE_201:Customer-managed keys need the Premium tier (about 20x the cost of Standard for this workload).
  #checkov:skip=CKV_AZURE_204:Private endpoints need the Premium tier and a VNet-integrated function; access is Entra ID only (local_auth_enabled = false).
  name                          = local.servicebus_namespace_name
  resource_group_name           = azurerm_resource_group.this.name
  location                      = azurerm_resource_group.this.location
  sku                           = "Standard"
  local_auth_enabled            = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = true
  tags                          = local.tags

  # Inert (no role assignments); lets the namespace use a customer-managed key
  # if it is ever moved to the Premium tier.
  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_servicebus_queue" "this" {
  name                                 = var.queue_name
  namespace_id                         = azurerm_servicebus_namespace.this.id
  max_delivery_count                   = var.max_delivery_count
  lock_duration                        = local.lock_duration
  default_message_ttl                  = var.default_message_ttl
  dead_lettering_on_message_expiration = true
  requires_session                     = false
  partitioning_enabled                 = false

  lifecycle {
    precondition {
      condition     = local.lock_seconds >= var.function_timeout_seconds
      error_message = "The queue lock duration must not be shorter than the function timeout."
    }
  }
}

##########
# Storage
##########

# Host storage: AzureWebJobsStorage (leases, keys) and the Flex Consumption
# deployment container. Kept apart from the results so that the account-wide
# role the Functions host needs does not reach the results.
resource "azurerm_storage_account" "host" {
  #checkov:skip=CKV_AZURE_33:Queue service logging needs the storage data plane (disabled for the provider) and a log destination; the host uses blobs only.
  #checkov:skip=CKV_AZURE_35:The Flex Consumption app reaches host storage over public endpoints (no VNet integration); access needs an Entra ID token (shared keys are disabled).
  #checkov:skip=CKV_AZURE_59:See CKV_AZURE_35: public network access is needed without VNet integration and private endpoints.
  #checkov:skip=CKV_AZURE_206:Host storage holds only leases, host keys and the deployment package, all re-creatable; LRS is the cheapest replication and is offered in every region (var.storage_replication_type).
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed encryption keys (with infrastructure encryption); a customer-managed key needs a Key Vault and key lifecycle outside this stack.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet and a VNet-integrated function, out of scope for this stack.
  #checkov:skip=CKV2_AZURE_41:Shared keys (and so account SAS) are disabled; a SAS expiration policy has nothing to govern.
  name                              = local.host_storage_name
  resource_group_name               = azurerm_resource_group.this.name
  location                          = azurerm_resource_group.this.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  tags                              = local.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }

    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:The check wants azurerm_log_analytics_storage_insights, which needs a storage account key (shared keys are disabled); the container only holds the deployment package.
  name                  = local.deployment_container_name
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}

resource "azurerm_storage_account" "results" {
  #checkov:skip=CKV_AZURE_33:The account holds blobs only; there is no queue service to log.
  #checkov:skip=CKV_AZURE_35:The Flex Consumption app writes results over public endpoints (no VNet integration); access needs an Entra ID token (shared keys are disabled).
  #checkov:skip=CKV_AZURE_59:See CKV_AZURE_35: public network access is needed without VNet integration and private endpoints.
  #checkov:skip=CKV_AZURE_206:Results can be recomputed from their tasks; LRS is the default for cost and regional availability (var.storage_replication_type allows GRS/GZRS).
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed encryption keys (with infrastructure encryption); a customer-managed key needs a Key Vault and key lifecycle outside this stack.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet and a VNet-integrated function, out of scope for this stack.
  #checkov:skip=CKV2_AZURE_41:Shared keys (and so account SAS) are disabled; a SAS expiration policy has nothing to govern.
  name                              = local.results_storage_name
  resource_group_name               = azurerm_resource_group.this.name
  location                          = azurerm_resource_group.this.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  tags                              = local.tags

  blob_properties {
    versioning_enabled = var.blob_versioning_enabled

    delete_retention_policy {
      days = var.soft_delete_retention_days
    }

    container_delete_retention_policy {
      days = var.soft_delete_retention_days
    }
  }
}

resource "azurerm_storage_container" "results" {
  #checkov:skip=CKV2_AZURE_21:The check wants azurerm_log_analytics_storage_insights, which needs a storage account key (shared keys are disabled); blob reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.results_blob instead.
  name                  = var.results_container_name
  storage_account_id    = azurerm_storage_account.results.id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "results" {
  count = var.results_expiration_days != null || (var.blob_versioning_enabled && var.noncurrent_version_expiration_days != null) ? 1 : 0

  storage_account_id = azurerm_storage_account.results.id

  dynamic "rule" {
    for_each = var.results_expiration_days == null ? [] : [var.results_expiration_days]

    content {
      name    = "expire-results"
      enabled = true

      filters {
        blob_types   = ["blockBlob"]
        prefix_match = ["${azurerm_storage_container.results.name}/${local.results_key_prefix}"]
      }

      actions {
        base_blob {
          delete_after_days_since_creation_greater_than = rule.value
        }
      }
    }
  }

  dynamic "rule" {
    for_each = var.blob_versioning_enabled && var.noncurrent_version_expiration_days != null ? [var.noncurrent_version_expiration_days] : []

    content {
      name    = "expire-previous-versions"
      enabled = true

      filters {
        blob_types = ["blockBlob"]
      }

      actions {
        version {
          delete_after_days_since_creation = rule.value
        }
      }
    }
  }
}

# Audit trail of result reads, writes and deletes in the Log Analytics workspace.
resource "azurerm_monitor_diagnostic_setting" "results_blob" {
  name                       = "to-${azurerm_log_analytics_workspace.this.name}"
  target_resource_id         = "${azurerm_storage_account.results.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }
}

# Queue and dead-letter metrics (ActiveMessages, DeadletteredMessages) and
# operational logs of the namespace.
resource "azurerm_monitor_diagnostic_setting" "servicebus" {
  name                       = "to-${azurerm_log_analytics_workspace.this.name}"
  target_resource_id         = azurerm_servicebus_namespace.this.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "OperationalLogs"
  }

  enabled_metric {
    category = "AllMetrics"
  }
}

###########
# Function
###########

resource "azurerm_service_plan" "this" {
  #checkov:skip=CKV_AZURE_212:A Flex Consumption (FC1) plan has no fixed worker count; instances are allocated per event and scale to zero.
  #checkov:skip=CKV_AZURE_225:Zone redundancy is not needed for a queue worker: tasks wait in Service Bus and are retried if an instance or zone fails; Flex zone redundancy is region-dependent.
  name                = local.service_plan_name
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = local.tags
}

resource "azurerm_function_app_flex_consumption" "this" {
  name                = local.function_app_name
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  service_plan_id     = azurerm_service_plan.this.id

  runtime_name           = local.runtime_name
  runtime_version        = local.runtime_version
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_in_mb

  # Deployment package container, read and written with the app's own identity.
  storage_container_type      = "blobContainer"
  storage_container_endpoint  = "${azurerm_storage_account.host.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type = "SystemAssignedIdentity"

  https_only                                     = true
  public_network_access_enabled                  = true
  webdeploy_publish_basic_authentication_enabled = false
  client_certificate_enabled                     = false
  tags                                           = local.tags

  identity {
    type = "SystemAssigned"
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.this.connection_string
    minimum_tls_version                    = "1.2"
    scm_minimum_tls_version                = "1.2"
    http2_enabled                          = true
    # A Service Bus-triggered app serves no HTTP traffic: deny all inbound
    # requests to the app (deployment goes through the SCM site, which Entra ID protects).
    ip_restriction_default_action     = "Deny"
    scm_ip_restriction_default_action = "Allow"
  }

  app_settings = {
    # Provider bug (azurerm 4.55.0): with an identity for storage it still injects
    # AzureWebJobsStorage as a connection string with an empty key, which beats the
    # identity settings below. An explicit empty value removes it (it shows as a
    # one-line diff on every plan). terraform-provider-azurerm #29693, #30732, #33211.
    AzureWebJobsStorage              = ""
    AzureWebJobsStorage__accountName = azurerm_storage_account.host.name
    AzureWebJobsStorage__credential  = "managedidentity"

    # Overrides host.json so the lock duration derived above always fits.
    AzureFunctionsJobHost__functionTimeout = local.function_timeout

    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "Authorization=AAD"

    TASK_QUEUE_NAME                                = azurerm_servicebus_queue.this.name
    SERVICEBUS_CONNECTION__fullyQualifiedNamespace = local.servicebus_fqdn
    RESULTS_BLOB_ACCOUNT_URL                       = azurerm_storage_account.results.primary_blob_endpoint
    RESULTS_CONTAINER                              = azurerm_storage_container.results.name
    RESULTS_PREFIX                                 = var.results_prefix
    RESULTS_LAYOUT                                 = var.results_layout

    # Read by the batch trigger only (results_layout = "packed"); overrides host.json.
    AzureFunctionsJobHost__extensions__serviceBus__maxMessageBatchSize = tostring(var.max_message_batch_size)
  }

  lifecycle {
    precondition {
      condition     = var.results_layout != "packed" || var.max_message_batch_size <= var.instance_memory_in_mb
      error_message = "With results_layout = \"packed\", max_message_batch_size must not exceed instance_memory_in_mb: a batch of 256 KiB messages must fit in a quarter of an instance's memory."
    }
  }
}

###################
# Role assignments
###################

# Trigger: receive, complete, abandon and dead-letter on this queue only.
resource "azurerm_role_assignment" "queue_receiver" {
  scope                = azurerm_servicebus_queue.this.id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = azurerm_function_app_flex_consumption.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "The worker receives tasks from its queue."
}

# Results: blob write on the results container only (created with
# storage_account_id, so its id is the Resource Manager id).
resource "azurerm_role_assignment" "results_writer" {
  scope                = azurerm_storage_container.results.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_function_app_flex_consumption.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "The worker writes result and error blobs."
}

# Host storage: the Functions host creates its own containers (azure-webjobs-hosts,
# azure-webjobs-secrets) and takes blob leases, which needs Storage Blob Data Owner
# on the account; it also covers the deployment container. This account holds
# nothing else.
resource "azurerm_role_assignment" "host_storage" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = azurerm_function_app_flex_consumption.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "AzureWebJobsStorage and the Flex Consumption deployment container."
}

# Telemetry ingestion with an Entra ID token (App Insights local auth is off).
resource "azurerm_role_assignment" "telemetry" {
  scope                = azurerm_application_insights.this.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_function_app_flex_consumption.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "The worker sends telemetry to Application Insights."
}

#########################################
# Queue-pulling worker (`adder work`), optional
#########################################

# A user-assigned identity for VMs, scale sets or container instances running
# `adder work`: attach it to them and set AZURE_CLIENT_ID to its client id. It can
# receive, renew, complete and abandon the queue's messages and write blobs in the
# results container, nothing else (no Send, no Manage, no other container).
resource "azurerm_user_assigned_identity" "worker" {
  count = var.create_worker_identity ? 1 : 0

  name                = "id-${var.name}-worker"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  tags                = local.tags
}

resource "azurerm_role_assignment" "worker_queue_receiver" {
  count = var.create_worker_identity ? 1 : 0

  scope                = azurerm_servicebus_queue.this.id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = azurerm_user_assigned_identity.worker[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "adder work receives tasks from this queue, renews their locks, completes and abandons them."
}

resource "azurerm_role_assignment" "worker_results_writer" {
  count = var.create_worker_identity ? 1 : 0

  scope                = azurerm_storage_container.results.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker[0].principal_id
  principal_type       = "ServicePrincipal"
  description          = "adder work writes result and error blobs in this container."
}
