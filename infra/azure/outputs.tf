output "resource_group" {
  description = "Name of the resource group holding every resource of the stack."
  value       = azurerm_resource_group.this.name
}

output "location" {
  description = "Azure region the stack is deployed in."
  value       = azurerm_resource_group.this.location
}

output "servicebus_namespace" {
  description = "Name of the Service Bus namespace (Entra ID access only; senders need \"Azure Service Bus Data Sender\" on the queue)."
  value       = azurerm_servicebus_namespace.this.name
}

output "servicebus_fully_qualified_namespace" {
  description = "Host name of the Service Bus namespace (SERVICEBUS_CONNECTION__fullyQualifiedNamespace), for azure-servicebus clients."
  value       = local.servicebus_fqdn
}

output "queue_name" {
  description = "Name of the task queue (TASK_QUEUE_NAME); dead-lettered tasks are in <queue>/$deadletterqueue."
  value       = azurerm_servicebus_queue.this.name
}

output "queue_id" {
  description = "Resource Manager ID of the task queue (scope for role assignments to producers)."
  value       = azurerm_servicebus_queue.this.id
}

output "queue_lock_duration" {
  description = "Lock duration of the task queue, derived from the function timeout."
  value       = azurerm_servicebus_queue.this.lock_duration
}

output "storage_account" {
  description = "Name of the storage account holding the results container."
  value       = azurerm_storage_account.results.name
}

output "results_blob_account_url" {
  description = "Blob endpoint of the results account (RESULTS_BLOB_ACCOUNT_URL)."
  value       = azurerm_storage_account.results.primary_blob_endpoint
}

output "results_container" {
  description = "Name of the private results container (RESULTS_CONTAINER)."
  value       = azurerm_storage_container.results.name
}

output "results_prefix" {
  description = "Blob name prefix of results (RESULTS_PREFIX): results are <prefix>/<task_id>.out, errors <prefix>/<task_id>.err."
  value       = var.results_prefix
}

output "results_layout" {
  description = "How the function writes results (RESULTS_LAYOUT): \"per_task\" (one blob per task) or \"packed\" (one <prefix>/packed/<sha256>.jsonl blob per batch)."
  value       = var.results_layout
}

output "max_message_batch_size" {
  description = "Most messages one call of the batch trigger gets, so the most tasks one pack blob holds (used when results_layout = \"packed\"; a call gets what one receive returns, up to this)."
  value       = var.max_message_batch_size
}

output "instance_memory_in_mb" {
  description = "Memory of one Flex Consumption instance in MB (the GB-s of the compute bill)."
  value       = azurerm_function_app_flex_consumption.this.instance_memory_in_mb
}

output "host_storage_account" {
  description = "Name of the storage account used by the Functions host (AzureWebJobsStorage) and for the deployment package."
  value       = azurerm_storage_account.host.name
}

output "function_app_name" {
  description = "Name of the Flex Consumption function app (target of `az functionapp deployment source config-zip`)."
  value       = azurerm_function_app_flex_consumption.this.name
}

output "function_app_principal_id" {
  description = "Object ID of the function app's system-assigned identity."
  value       = azurerm_function_app_flex_consumption.this.identity[0].principal_id
}

output "application_insights_name" {
  description = "Name of the Application Insights component receiving the function's telemetry."
  value       = azurerm_application_insights.this.name
}

output "worker_identity_client_id" {
  description = "Client id of the `adder work` managed identity: set AZURE_CLIENT_ID to it on the worker's VM or container (null unless create_worker_identity)."
  value       = try(azurerm_user_assigned_identity.worker[0].client_id, null)
}

output "worker_identity_id" {
  description = "Resource Manager id of the `adder work` managed identity, to attach to a VM, scale set or container group (null unless create_worker_identity)."
  value       = try(azurerm_user_assigned_identity.worker[0].id, null)
}

output "worker_cloud_config" {
  description = "The cloud config `adder work` reads, ready to use: `terraform output -json worker_cloud_config > cloud-config.json`, then `adder work --config cloud-config.json` (provider, job_id = name, queue_name, result_bucket = the results container, result_prefix, config.namespace = the Service Bus host name, config.account_url = the results blob endpoint, config.lock_duration = the queue's lock duration (the worker's lease), config.results_layout). Workers are competing consumers of the task queue (beside the function), so every worker takes the same file. No credentials: set AZURE_CLIENT_ID to worker_identity_client_id (create_worker_identity)."
  value = {
    provider      = "azure"
    job_id        = var.name
    queue_name    = azurerm_servicebus_queue.this.name
    result_bucket = azurerm_storage_container.results.name
    result_prefix = var.results_prefix
    config = {
      namespace      = local.servicebus_fqdn
      account_url    = azurerm_storage_account.results.primary_blob_endpoint
      lock_duration  = azurerm_servicebus_queue.this.lock_duration
      results_layout = var.results_layout
    }
  }
}
