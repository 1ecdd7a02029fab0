##########
# General
##########

variable "project_id" {
  description = "ID of the Google Cloud project to deploy into. There is deliberately no default."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "The project_id must be a Google Cloud project ID: 6-30 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the function, its Cloud Run service and (by default) the buckets, e.g. \"europe-west1\". There is deliberately no default."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "The region must look like a Google Cloud region, e.g. \"europe-west1\" or \"us-central1\"."
  }
}

variable "name" {
  description = "Name stem for every resource: function \"<name>-worker\", topic \"<name>-tasks\", service accounts \"<name>-worker\" and \"<name>-invoker\", buckets \"<project_id>-<name>-results|source\"."
  type        = string
  default     = "adder"

  validation {
    # 20 characters keep "<name>-invoker" inside the 30-character service account ID limit
    # and "<project_id>-<name>-results" inside the 63-character bucket name limit.
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name))
    error_message = "The name must be 2-20 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "labels" {
  description = "Extra labels merged into the provider default_labels (project, stack, managed-by) of every labelled resource."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "Label keys must be 1-63 lowercase letters, digits, underscores or hyphens starting with a letter; values up to 63 of the same characters."
  }
}

variable "enable_apis" {
  description = "Enable the APIs the stack needs (Cloud Functions, Cloud Run, Cloud Build, Artifact Registry, Pub/Sub, Cloud Storage, IAM, Cloud Logging) with google_project_service. Set false when the project's APIs are managed elsewhere. APIs are never disabled on destroy."
  type        = bool
  default     = true
}

###########
# Function
###########

variable "source_zip_path" {
  description = "Path of the deployment zip built by `adder package gcp`. A relative path is resolved against this stack's directory. Its SHA-256 is part of the uploaded object's name, so a code change redeploys the function."
  type        = string
  default     = "../../dist/gcp_function.zip"

  validation {
    condition     = endswith(var.source_zip_path, ".zip")
    error_message = "The source_zip_path must point to a .zip file."
  }
}

variable "function_memory" {
  description = "Memory of one function instance (service_config.available_memory), e.g. \"256M\", \"512M\", \"1G\" or \"2Gi\"."
  type        = string
  default     = "256M"

  validation {
    condition     = can(regex("^[1-9][0-9]*(M|Mi|G|Gi)$", var.function_memory))
    error_message = "The function_memory must be a number followed by M, Mi, G or Gi, e.g. \"256M\"."
  }
}

variable "function_timeout_seconds" {
  description = "Function timeout in seconds (1-600). The push subscription's ack deadline (which is also the push request timeout) is derived from it: min(600, timeout + 30)."
  type        = number
  default     = 60

  validation {
    condition     = var.function_timeout_seconds >= 1 && var.function_timeout_seconds <= 600 && floor(var.function_timeout_seconds) == var.function_timeout_seconds
    error_message = "The function_timeout_seconds must be a whole number between 1 and 600 (a Pub/Sub push request cannot outlive the 600 s maximum ack deadline)."
  }
}

variable "max_instance_count" {
  description = "Upper bound of concurrently running function instances (service_config.max_instance_count). Pub/Sub push backs off when the function answers 429/503 at this limit."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instance_count >= 1 && var.max_instance_count <= 1000 && floor(var.max_instance_count) == var.max_instance_count
    error_message = "The max_instance_count must be a whole number between 1 and 1000."
  }
}

variable "request_concurrency" {
  description = "Requests one function instance serves at once (service_config.max_instance_request_concurrency, 1-1000); the function's server gets as many threads (THREADS). A task is I/O-bound (a 20-50 ms Cloud Storage write, a few ms of CPU), so concurrent requests overlap their waits: measured with bench/gcp_concurrency.py, one instance serves several times the tasks per second of concurrency 1. Cost: an instance is billed while it serves at least one request, so overlapping requests share instance-seconds: fewer instances and fewer billed vCPU-/GiB-seconds per task (and fewer cold starts), at the price of 1 vCPU per instance (required above 1). In the packed layout the requests an instance holds at once are written as one pack, so the concurrency is also the largest pack. 1 restores one request per instance."
  type        = number
  default     = 80

  validation {
    condition     = var.request_concurrency >= 1 && var.request_concurrency <= 1000 && floor(var.request_concurrency) == var.request_concurrency
    error_message = "The request_concurrency must be a whole number between 1 and 1000."
  }
}

variable "function_cpu" {
  description = "vCPUs of one function instance (service_config.available_cpu): \"0.08\" to \"1\" in steps of 0.001, or \"2\", \"4\", \"6\" or \"8\". Cloud Run allows a request_concurrency above 1 only with at least 1 vCPU. Null: the platform derives it from function_memory (256M gets 0.167 vCPU), which allows request_concurrency = 1 only. Fewer than 1 vCPU also caps the memory (under 0.5 vCPU: 512 MiB; under 1: 1 GiB), and 4, 6 and 8 vCPUs need at least 2, 4 and 4 GiB (checked at plan time)."
  type        = string
  default     = "1"

  validation {
    condition     = var.function_cpu == null || try(contains(["2", "4", "6", "8"], var.function_cpu) || (can(regex("^(0(\\.[0-9]{1,3})?|1(\\.0{1,3})?)$", var.function_cpu)) && tonumber(var.function_cpu) >= 0.08), false)
    error_message = "The function_cpu must be null, a number of vCPUs from \"0.08\" to \"1\" with at most 3 decimals, or \"2\", \"4\", \"6\" or \"8\"."
  }
}

variable "build_service_account" {
  description = "Optional service account Cloud Build uses to build the function, as \"projects/<project>/serviceAccounts/<email>\". When null the platform default build service account is used (in newer projects the Compute Engine default service account)."
  type        = string
  default     = null

  validation {
    condition     = var.build_service_account == null || can(regex("^projects/[^/]+/serviceAccounts/[^/]+@[^/]+$", var.build_service_account))
    error_message = "The build_service_account must be null or \"projects/<project>/serviceAccounts/<email>\"."
  }
}

##########
# Pub/Sub
##########

variable "message_retention_duration" {
  description = "How long the task subscription keeps unacknowledged messages, as a duration in seconds with an \"s\" suffix (600s-604800s; default 7 days)."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.message_retention_duration)) && try(tonumber(trimsuffix(var.message_retention_duration, "s")) >= 600 && tonumber(trimsuffix(var.message_retention_duration, "s")) <= 604800, false)
    error_message = "The message_retention_duration must be between \"600s\" and \"604800s\"."
  }
}

variable "dead_letter_retention_duration" {
  description = "How long the dead-letter subscription keeps dead-lettered messages, as a duration in seconds with an \"s\" suffix (600s-604800s; default and recommended: 7 days, the maximum)."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.dead_letter_retention_duration)) && try(tonumber(trimsuffix(var.dead_letter_retention_duration, "s")) >= 600 && tonumber(trimsuffix(var.dead_letter_retention_duration, "s")) <= 604800, false)
    error_message = "The dead_letter_retention_duration must be between \"600s\" and \"604800s\"."
  }
}

variable "max_delivery_attempts" {
  description = "Delivery attempts of one message before Pub/Sub forwards it to the dead-letter topic (dead_letter_policy.max_delivery_attempts, 5-100). Pub/Sub honours it best-effort."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100 && floor(var.max_delivery_attempts) == var.max_delivery_attempts
    error_message = "The max_delivery_attempts must be a whole number between 5 and 100."
  }
}

variable "minimum_backoff" {
  description = "Minimum delay between redeliveries of a nacked message (retry_policy.minimum_backoff), \"0s\"-\"600s\"."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.minimum_backoff)) && try(tonumber(trimsuffix(var.minimum_backoff, "s")) <= 600, false)
    error_message = "The minimum_backoff must be a whole number of seconds with an \"s\" suffix, between \"0s\" and \"600s\"."
  }
}

variable "maximum_backoff" {
  description = "Maximum delay between redeliveries of a nacked message (retry_policy.maximum_backoff), \"0s\"-\"600s\" and not below minimum_backoff."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.maximum_backoff)) && try(tonumber(trimsuffix(var.maximum_backoff, "s")) <= 600, false)
    error_message = "The maximum_backoff must be a whole number of seconds with an \"s\" suffix, between \"0s\" and \"600s\"."
  }
}

variable "grant_pubsub_token_creator" {
  description = "Grant the Pub/Sub service agent roles/iam.serviceAccountTokenCreator on the invoker service account only, so it can mint the OIDC token of authenticated pushes. Google documents this grant as needed only when the Pub/Sub service agent was created on or before 8 April 2021; it is scoped to one service account, so it is on by default."
  type        = bool
  default     = true
}

##########
# Results
##########

variable "bucket_location" {
  description = "Location of the results and source buckets. When null, the function's region is used."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_location == null || can(regex("^[A-Za-z0-9-]+$", var.bucket_location))
    error_message = "The bucket_location must be null or a Cloud Storage location such as \"EUROPE-WEST1\", \"EU\" or \"eur4\"."
  }
}

variable "results_bucket_name" {
  description = "Exact name of the results bucket. When null, \"<project_id>-<name>-results\" is used."
  type        = string
  default     = null

  validation {
    condition     = var.results_bucket_name == null || try(can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.results_bucket_name)) && !startswith(var.results_bucket_name, "goog") && !strcontains(var.results_bucket_name, "google"), false)
    error_message = "The results_bucket_name must be null or a valid bucket name: 3-63 lowercase letters, digits, hyphens and underscores, starting and ending with a letter or digit, not starting with \"goog\" and not containing \"google\"."
  }
}

variable "results_prefix" {
  description = "Object name prefix of results ({prefix}/{task_id}.out and .err), without leading or trailing slash; empty for the bucket root. Passed to the function as RESULTS_PREFIX."
  type        = string
  default     = "results"

  validation {
    condition     = var.results_prefix == "" || (length(var.results_prefix) <= 512 && can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.results_prefix)))
    error_message = "The results_prefix must be empty or path segments of [A-Za-z0-9!_.*'()-] joined by single slashes, with no leading or trailing slash."
  }
}

variable "results_layout" {
  description = "How the function writes results (RESULTS_LAYOUT): \"per_task\", one object per task (<prefix>/<task_id>.out or .err), or \"packed\", one object per batch of the requests an instance serves at once (<prefix>/packed/<hash>.jsonl, one JSON line per task), gathered for at most pack_max_wait_ms: object writes fall from one per task to one per batch (up to request_concurrency tasks). `adder fetch gcp` and `adder status/watch gcp` read both layouts."
  type        = string
  default     = "per_task"

  validation {
    condition     = contains(["per_task", "packed"], var.results_layout)
    error_message = "The results_layout must be \"per_task\" or \"packed\"."
  }
}

variable "pack_max_wait_ms" {
  description = "Packed layout only (PACK_MAX_WAIT_MS): how long, from its first request, an instance gathers requests into one pack before writing it (0-1000 ms; a pack holding request_concurrency requests is written at once). Every request of the pack is answered after the write, so this is added to a task's latency when the instance is not busy."
  type        = number
  default     = 50

  validation {
    condition     = var.pack_max_wait_ms >= 0 && var.pack_max_wait_ms <= 1000 && floor(var.pack_max_wait_ms) == var.pack_max_wait_ms
    error_message = "The pack_max_wait_ms must be a whole number between 0 and 1000."
  }
}

variable "results_writer_role_id" {
  description = "ID of the project custom role that lets the function create and replace result objects (storage.objects.create and storage.objects.delete). Null: \"<name with _ for ->_results_writer\". Set another ID to re-create a stack within 37 days of destroying it (a deleted custom role's ID cannot be reused before then)."
  type        = string
  default     = null

  validation {
    condition     = var.results_writer_role_id == null || can(regex("^[a-zA-Z0-9_.]{3,64}$", var.results_writer_role_id))
    error_message = "The results_writer_role_id must be 3-64 characters of letters, digits, underscores and periods."
  }
}

variable "results_expiration_days" {
  description = "When set, result objects under the prefix are deleted this many days after creation (lifecycle rule); null keeps them forever."
  type        = number
  default     = null

  validation {
    condition     = var.results_expiration_days == null || try(var.results_expiration_days >= 1 && floor(var.results_expiration_days) == var.results_expiration_days, false)
    error_message = "The results_expiration_days must be null or a whole number >= 1."
  }
}

variable "bucket_versioning_enabled" {
  description = "Enable object versioning on the results bucket (keeps overwritten and deleted results as noncurrent versions)."
  type        = bool
  default     = true
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent object versions are deleted from the results and source buckets; null keeps them."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "The noncurrent_version_expiration_days must be null or a whole number >= 1."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the results and source buckets even when they still hold objects. Keep false in production."
  type        = bool
  default     = false
}

##########
# Logging
##########

variable "log_retention_days" {
  description = "When set, the function's logs are also routed to a dedicated Cloud Logging bucket that keeps them this many days (1-3650). When null, logs stay only in the project's _Default bucket (30 days unless changed project-wide)."
  type        = number
  default     = 90

  validation {
    condition     = var.log_retention_days == null || try(var.log_retention_days >= 1 && var.log_retention_days <= 3650 && floor(var.log_retention_days) == var.log_retention_days, false)
    error_message = "The log_retention_days must be null or a whole number between 1 and 3650."
  }
}

variable "log_bucket_location" {
  description = "Location of the dedicated log bucket (used only when log_retention_days is set), e.g. \"global\" or a region such as \"europe-west1\"."
  type        = string
  default     = "global"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.log_bucket_location))
    error_message = "The log_bucket_location must be \"global\" or a lowercase Cloud Logging location such as \"europe-west1\"."
  }
}

#########################
# Worker (`adder work`)
#########################

variable "create_worker_subscription" {
  description = "Create what `adder work` (the queue-pulling worker for VMs and containers) needs: a pull subscription \"<name>-tasks-worker\" of the task topic with the same dead-letter and retry policies, and a service account \"<name>-puller\" with roles/pubsub.subscriber on that subscription and the results writer role on the results bucket (under the prefix). Every subscription of a topic gets every message: while the push subscription exists too, the function and the workers each process every task (push_to_function = false runs workers only)."
  type        = bool
  default     = false
}

variable "push_to_function" {
  description = "Create the push subscription \"<name>-tasks-push\" that delivers tasks to the function. False, with create_worker_subscription = true, runs workers only: with both on, every task is processed twice (by the function and by a worker). Without it the function stays deployed but receives nothing (with min instances 0 it costs nothing idle). A topic without a subscription drops what is published to it, so false requires create_worker_subscription = true."
  type        = bool
  default     = true
  nullable    = false

  validation {
    # Cross-variable validation: Terraform >= 1.9 (versions.tf).
    condition     = var.push_to_function || var.create_worker_subscription == true
    error_message = "Setting push_to_function = false needs create_worker_subscription = true: a topic with no subscription drops every task published to it (nothing would process the tasks)."
  }
}

variable "worker_ack_deadline_seconds" {
  description = "Ack deadline of the worker subscription (10-600 s). The worker's client extends it for the tasks it holds; it is how long the tasks of a worker that died without draining (kill -9, a lost VM) stay hidden before another worker gets them."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_ack_deadline_seconds >= 10 && var.worker_ack_deadline_seconds <= 600 && floor(var.worker_ack_deadline_seconds) == var.worker_ack_deadline_seconds
    error_message = "The worker_ack_deadline_seconds must be a whole number between 10 and 600."
  }
}
