##########
# General
##########

variable "subscription_id" {
  description = "Azure subscription to deploy into. When null (the default), the provider takes it from ARM_SUBSCRIPTION_ID or the Azure CLI login."
  type        = string
  default     = null

  validation {
    condition     = var.subscription_id == null || can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "The subscription_id must be null or a subscription GUID."
  }
}

variable "location" {
  description = "Azure region to deploy into, e.g. \"westeurope\" (it must offer the Flex Consumption plan). There is deliberately no default."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "The location must be an Azure region name in lowercase without spaces, e.g. \"westeurope\" or \"eastus2\"."
  }
}

variable "name" {
  description = "Name stem for every resource: resource group \"rg-<name>\", function app \"func-<name>-<suffix>\", Service Bus namespace \"sb-<name>-<suffix>\", storage accounts \"st<name>fn<suffix>\" and \"st<name>res<suffix>\". <suffix> is 6 hex characters derived from the subscription and resource group, so the globally unique names do not collide."
  type        = string
  default     = "adder"

  validation {
    # 12 characters keep "st<name without hyphens>res<6>" inside the 24-character storage account limit.
    condition     = can(regex("^[a-z][a-z0-9-]{0,10}[a-z0-9]$", var.name))
    error_message = "The name must be 2-12 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "resource_group_name" {
  description = "Name of the resource group the stack creates. When null, \"rg-<name>\" is used."
  type        = string
  default     = null

  validation {
    condition     = var.resource_group_name == null || can(regex("^[-\\w\\.\\(\\)]{1,89}[-\\w\\(\\)]$", var.resource_group_name))
    error_message = "The resource_group_name must be null or 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending with a period."
  }
}

variable "tags" {
  description = "Extra tags merged into the default tags (project, stack, managed-by) of every resource."
  type        = map(string)
  default     = {}
}

###########
# Function
###########

variable "instance_memory_in_mb" {
  description = "Memory of one Flex Consumption instance in MB: 512, 2048 or 4096."
  type        = number
  default     = 2048

  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_in_mb)
    error_message = "The instance_memory_in_mb must be 512, 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Upper bound of instances the Flex Consumption plan may scale the app out to (1-1000 in the provider; the platform may enforce a higher minimum in some regions)."
  type        = number
  default     = 40

  validation {
    condition     = var.maximum_instance_count >= 1 && var.maximum_instance_count <= 1000 && floor(var.maximum_instance_count) == var.maximum_instance_count
    error_message = "The maximum_instance_count must be a whole number between 1 and 1000."
  }
}

variable "function_timeout_seconds" {
  description = "Function timeout in seconds (1-300), set through the AzureFunctionsJobHost__functionTimeout app setting (it overrides host.json). The queue's lock duration is derived from it: min(300 s, timeout + 30 s)."
  type        = number
  default     = 60

  validation {
    condition     = var.function_timeout_seconds >= 1 && var.function_timeout_seconds <= 300 && floor(var.function_timeout_seconds) == var.function_timeout_seconds
    error_message = "The function_timeout_seconds must be a whole number between 1 and 300 (a Service Bus lock lasts at most 5 minutes)."
  }
}

variable "results_layout" {
  description = "How the function writes results, passed to it as RESULTS_LAYOUT: \"per_task\" (the default: one blob <prefix>/<task_id>.out or .err per task, one message per call) or \"packed\" (one blob <prefix>/packed/<sha256>.jsonl per batch of messages, through a batch trigger; adder fetch unpacks it into the same files). Packed cuts blob writes, most of a job's bill, by the batch size."
  type        = string
  default     = "per_task"

  validation {
    condition     = contains(["per_task", "packed"], var.results_layout)
    error_message = "The results_layout must be \"per_task\" or \"packed\"."
  }
}

variable "max_message_batch_size" {
  description = "Most messages one call of the batch trigger gets when results_layout = \"packed\" (ignored by per_task); set through the AzureFunctionsJobHost__extensions__serviceBus__maxMessageBatchSize app setting (it overrides host.json). Each call writes one pack, so blob writes per task are at least 1/this. An instance runs one batch at a time, and target-based scaling aims at (active messages / this) instances. At most instance_memory_in_mb: a batch of Standard-tier messages (256 KiB each at worst) then fits in a quarter of an instance's memory."
  type        = number
  default     = 1000

  validation {
    condition     = var.max_message_batch_size >= 1 && var.max_message_batch_size <= 4096 && floor(var.max_message_batch_size) == var.max_message_batch_size
    error_message = "The max_message_batch_size must be a whole number between 1 and 4096."
  }
}

###########
# Worker
###########

variable "create_worker_identity" {
  description = "Also create a user-assigned managed identity for `adder work` (the queue-pulling worker on VMs, spot scale sets or containers): \"Azure Service Bus Data Receiver\" on the task queue and \"Storage Blob Data Contributor\" on the results container, nothing else. Off by default: the function app has its own identity."
  type        = bool
  default     = false
}

##############
# Service Bus
##############

variable "queue_name" {
  description = "Name of the task queue (TASK_QUEUE_NAME of the function)."
  type        = string
  default     = "tasks"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,258}[A-Za-z0-9_]$|^[A-Za-z0-9]$", var.queue_name))
    error_message = "The queue_name must be 1-260 letters, digits, periods, hyphens and underscores, starting with a letter or digit and ending with a letter, digit or underscore."
  }
}

variable "max_delivery_count" {
  description = "Deliveries of one message before Service Bus moves it to the queue's dead-letter sub-queue (<queue>/$deadletterqueue)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_count >= 1 && var.max_delivery_count <= 2000 && floor(var.max_delivery_count) == var.max_delivery_count
    error_message = "The max_delivery_count must be a whole number between 1 and 2000."
  }
}

variable "default_message_ttl" {
  description = "How long a task may wait in the queue, as an ISO 8601 duration (e.g. \"P14D\"). Expired messages are dead-lettered, not dropped."
  type        = string
  default     = "P14D"

  validation {
    condition     = can(regex("^P(?:[0-9]+D)?(?:T(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+S)?)?$", var.default_message_ttl)) && var.default_message_ttl != "P" && !endswith(var.default_message_ttl, "T")
    error_message = "The default_message_ttl must be an ISO 8601 duration such as \"P14D\", \"PT12H\" or \"P1DT6H\"."
  }
}

##########
# Results
##########

variable "results_container_name" {
  description = "Name of the private results container (RESULTS_CONTAINER of the function)."
  type        = string
  default     = "results"

  validation {
    condition     = can(regex("^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$", var.results_container_name))
    error_message = "The results_container_name must be 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit."
  }
}

variable "results_prefix" {
  description = "Blob name prefix of results ({prefix}/{task_id}.out and .err), without leading or trailing slash; empty for the container root. Passed to the function as RESULTS_PREFIX."
  type        = string
  default     = "results"

  validation {
    condition     = var.results_prefix == "" || (length(var.results_prefix) <= 512 && can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.results_prefix)))
    error_message = "The results_prefix must be empty or path segments of [A-Za-z0-9!_.*'()-] joined by single slashes, with no leading or trailing slash."
  }
}

variable "results_expiration_days" {
  description = "When set, result blobs under the prefix are deleted this many days after creation (lifecycle management policy); null keeps them forever."
  type        = number
  default     = null

  validation {
    condition     = var.results_expiration_days == null || try(var.results_expiration_days >= 1 && floor(var.results_expiration_days) == var.results_expiration_days, false)
    error_message = "The results_expiration_days must be null or a whole number >= 1."
  }
}

variable "blob_versioning_enabled" {
  description = "Enable blob versioning on the results storage account (keeps overwritten and deleted results as previous versions)."
  type        = bool
  default     = true
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which previous blob versions in the results account are deleted (only with versioning); null keeps them."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "The noncurrent_version_expiration_days must be null or a whole number >= 1."
  }
}

variable "soft_delete_retention_days" {
  description = "Soft-delete retention of deleted blobs and containers in the results account, in days (1-365)."
  type        = number
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days >= 1 && var.soft_delete_retention_days <= 365 && floor(var.soft_delete_retention_days) == var.soft_delete_retention_days
    error_message = "The soft_delete_retention_days must be a whole number between 1 and 365."
  }
}

variable "storage_replication_type" {
  description = "Replication of both storage accounts: LRS (default; available in every region), ZRS, GRS, RAGRS, GZRS or RAGZRS."
  type        = string
  default     = "LRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "The storage_replication_type must be one of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

#############
# Monitoring
#############

variable "log_retention_days" {
  description = "Retention of the Log Analytics workspace behind Application Insights, in days (30-730)."
  type        = number
  default     = 90

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730 && floor(var.log_retention_days) == var.log_retention_days
    error_message = "The log_retention_days must be a whole number between 30 and 730."
  }
}
