##########
# General
##########

variable "region" {
  description = "AWS region to deploy into, e.g. \"eu-west-1\". There is deliberately no default."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$", var.region))
    error_message = "The region must look like an AWS region code, e.g. \"eu-west-1\" or \"us-gov-west-1\"."
  }
}

variable "name" {
  description = "Name stem for every resource (function \"<name>-worker\", queue \"<name>-tasks\", DLQ \"<name>-tasks-dlq\", bucket prefix \"<name>-results-\")."
  type        = string
  default     = "adder"

  validation {
    # 24 characters keep the derived names inside the S3 bucket_prefix (37),
    # IAM role (64) and Lambda function (64) limits.
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "The name must be 2-24 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "tags" {
  description = "Extra tags merged into the provider default_tags (project, stack, managed-by) of every resource."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "Optional customer-managed KMS key ARN used for the queues, the results bucket, the log group and the Lambda environment. When null (the default) AWS-managed encryption is used: SSE-SQS, SSE-S3 (AES256) and the CloudWatch Logs default. The key policy must allow the CloudWatch Logs service principal to use the key."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.kms_key_arn))
    error_message = "The kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); aliases are not accepted."
  }
}

###########
# Function
###########

variable "lambda_zip_path" {
  description = "Path of the deployment zip built by `adder package aws`. A relative path is resolved against this stack's directory."
  type        = string
  default     = "../../dist/aws_lambda.zip"

  validation {
    condition     = endswith(var.lambda_zip_path, ".zip")
    error_message = "The lambda_zip_path must point to a .zip file."
  }
}

variable "lambda_memory_size" {
  description = "Memory of the function in MB (128-10240)."
  type        = number
  default     = 256

  validation {
    condition     = var.lambda_memory_size >= 128 && var.lambda_memory_size <= 10240 && floor(var.lambda_memory_size) == var.lambda_memory_size
    error_message = "The lambda_memory_size must be a whole number between 128 and 10240."
  }
}

variable "function_timeout_seconds" {
  description = "Function timeout in seconds (1-900). The queue visibility timeout is derived from it."
  type        = number
  default     = 30

  validation {
    condition     = var.function_timeout_seconds >= 1 && var.function_timeout_seconds <= 900 && floor(var.function_timeout_seconds) == var.function_timeout_seconds
    error_message = "The function_timeout_seconds must be a whole number of seconds between 1 and 900."
  }
}

variable "application_log_level" {
  description = "Lambda JSON-log application log level: TRACE, DEBUG, INFO, WARN, ERROR or FATAL."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], var.application_log_level)
    error_message = "The application_log_level must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL."
  }
}

variable "system_log_level" {
  description = "Lambda JSON-log system (platform) log level: DEBUG, INFO or WARN."
  type        = string
  default     = "WARN"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARN"], var.system_log_level)
    error_message = "The system_log_level must be one of DEBUG, INFO, WARN."
  }
}

variable "log_retention_days" {
  description = "Retention of the function's log group in days; one of the values CloudWatch Logs accepts (0 = never expire)."
  type        = number
  default     = 365

  validation {
    condition = contains(
      [0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653],
      var.log_retention_days,
    )
    error_message = "The log_retention_days must be 0 or one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

#########
# Queues
#########

variable "message_retention_seconds" {
  description = "How long the task queue keeps a message, in seconds (60-1209600; default 4 days)."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "The message_retention_seconds must be between 60 and 1209600."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long the dead-letter queue keeps a message, in seconds (60-1209600; default and recommended: 14 days, the maximum)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "The dlq_message_retention_seconds must be between 60 and 1209600."
  }
}

variable "max_receive_count" {
  description = "Receives of one message before SQS moves it to the dead-letter queue (redrive maxReceiveCount). AWS advises at least 5 with Lambda."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "The max_receive_count must be a whole number between 1 and 1000."
  }
}

variable "min_visibility_timeout_seconds" {
  description = "Optional lower bound for the task queue visibility timeout. The stack uses max(6 x function_timeout_seconds + batching window, this value), capped at 43200 s."
  type        = number
  default     = null

  validation {
    condition     = var.min_visibility_timeout_seconds == null || try(var.min_visibility_timeout_seconds >= 0 && var.min_visibility_timeout_seconds <= 43200, false)
    error_message = "The min_visibility_timeout_seconds must be null or between 0 and 43200."
  }
}

#######################
# Event source mapping
#######################

variable "event_source_mapping_enabled" {
  description = "Whether Lambda polls the task queue. Set false to pause processing (messages stay in the queue) or in emulator tests that drive the handler themselves."
  type        = bool
  default     = true
}

variable "batch_size" {
  description = "Maximum messages per invocation (1-10000). Values above 10 require maximum_batching_window_in_seconds >= 1. With results_layout = \"packed\" each batch is one S3 object, so this divides the number of writes."
  type        = number
  default     = 10

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 10000 && floor(var.batch_size) == var.batch_size
    error_message = "The batch_size must be a whole number between 1 and 10000."
  }
}

variable "maximum_batching_window_in_seconds" {
  description = "How long Lambda gathers messages before invoking, in seconds (0-300)."
  type        = number
  default     = 0

  validation {
    condition     = var.maximum_batching_window_in_seconds >= 0 && var.maximum_batching_window_in_seconds <= 300 && floor(var.maximum_batching_window_in_seconds) == var.maximum_batching_window_in_seconds
    error_message = "The maximum_batching_window_in_seconds must be a whole number between 0 and 300."
  }
}

variable "maximum_concurrency" {
  description = "Upper bound of concurrent invocations the SQS event source may start (ScalingConfig.MaximumConcurrency, 2-1000)."
  type        = number
  default     = 5

  validation {
    condition     = var.maximum_concurrency >= 2 && var.maximum_concurrency <= 1000 && floor(var.maximum_concurrency) == var.maximum_concurrency
    error_message = "The maximum_concurrency must be a whole number between 2 and 1000."
  }
}

##########
# Results
##########

variable "results_bucket_name" {
  description = "Exact name of the results bucket. When null, a unique name starting with \"<name>-results-\" is generated."
  type        = string
  default     = null

  validation {
    condition = var.results_bucket_name == null || try(
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.results_bucket_name)) && !strcontains(var.results_bucket_name, ".."),
      false,
    )
    error_message = "The results_bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "results_prefix" {
  description = "Key prefix of result objects ({prefix}/{task_id}.out and .err), without leading or trailing slash; empty for the bucket root. Passed to the function as RESULTS_PREFIX."
  type        = string
  default     = "results"

  validation {
    condition     = var.results_prefix == "" || (length(var.results_prefix) <= 512 && can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.results_prefix)))
    error_message = "The results_prefix must be empty or path segments of [A-Za-z0-9!_.*'()-] joined by single slashes, with no leading or trailing slash."
  }
}

variable "results_layout" {
  description = "How the function writes results, passed to it as RESULTS_LAYOUT. \"per_task\" (the default): one object per task, <prefix>/<task_id>.out or .err. \"packed\": one object per delivered batch, <prefix>/packed/<sha256>.jsonl, one JSON line per task ({\"id\", \"result\"} or {\"name\", \"error\"}); `adder fetch` unpacks it to the same files. S3 PUTs fall from one per task to one per batch: up to batch_size times fewer (10x at the default 10). With a batching window (maximum_batching_window_in_seconds > 0, required for batch_size > 10) batches grow up to batch_size = 10000 and writes fall further, up to 10000x, at the cost of up to that many seconds of latency; a failed pack write returns the whole batch to the queue."
  type        = string
  default     = "per_task"

  validation {
    condition     = contains(["per_task", "packed"], var.results_layout)
    error_message = "The results_layout must be \"per_task\" or \"packed\"."
  }
}

variable "results_expiration_days" {
  description = "When set, result objects under the prefix expire after this many days; null keeps them forever."
  type        = number
  default     = null

  validation {
    condition     = var.results_expiration_days == null || try(var.results_expiration_days >= 1 && floor(var.results_expiration_days) == var.results_expiration_days, false)
    error_message = "The results_expiration_days must be null or a whole number >= 1."
  }
}

variable "bucket_versioning_enabled" {
  description = "Enable versioning on the results bucket (protects results from overwrite and delete)."
  type        = bool
  default     = true
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which non-current object versions are deleted (only relevant with versioning); null keeps them."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "The noncurrent_version_expiration_days must be null or a whole number >= 1."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the results bucket even when it still holds objects. Keep false in production."
  type        = bool
  default     = false
}

variable "create_worker_role" {
  description = "Also create an IAM role and instance profile for `adder work` (the queue-pulling worker on EC2 or ECS, e.g. on spot capacity): receive, extend and delete messages of the task queue and write results under the prefix, nothing else. Off by default: the Lambda function does not need it."
  type        = bool
  default     = false
}

variable "worker_trusted_services" {
  description = "AWS services that may assume the worker role (EC2 for an instance profile, ECS tasks for a task role)."
  type        = list(string)
  default     = ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]

  validation {
    condition     = length(var.worker_trusted_services) > 0 && alltrue([for service in var.worker_trusted_services : contains(["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"], service)])
    error_message = "The worker_trusted_services must list \"ec2.amazonaws.com\" and/or \"ecs-tasks.amazonaws.com\"."
  }
}

variable "worker_autoscaling_groups" {
  description = "Auto Scaling groups whose termination lifecycle hooks the worker role may complete (autoscaling:CompleteLifecycleAction, so `adder work` releases a scaled-in instance once drained instead of at the hook's heartbeat timeout): group names (a `*` matches any characters) in this stack's account and region, or full autoScalingGroup ARNs. Empty (the default): no such permission. Needs create_worker_role."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for group in var.worker_autoscaling_groups :
      startswith(group, "arn:")
      ? can(regex("^arn:aws[a-z-]*:autoscaling:[a-z0-9-]+:[0-9]{12}:autoScalingGroup:[^:]+:autoScalingGroupName/.+$", group))
      : can(regex("^[^:[:space:]]{1,255}$", group))
    ])
    error_message = "Each of worker_autoscaling_groups must be an Auto Scaling group name (1-255 characters, no colon or whitespace; * matches any) or an ARN arn:aws:autoscaling:<region>:<account>:autoScalingGroup:<id or *>:autoScalingGroupName/<name>."
  }
}
