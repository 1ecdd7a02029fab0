output "region" {
  description = "Region the stack is deployed in (pass it to boto3 / the AWS CLI)."
  value       = var.region
}

output "queue_url" {
  description = "URL of the task queue; send task JSON messages here (sqs:SendMessage)."
  value       = aws_sqs_queue.this.url
}

output "queue_arn" {
  description = "ARN of the task queue (grant sqs:SendMessage on it to producers)."
  value       = aws_sqs_queue.this.arn
}

output "queue_name" {
  description = "Name of the task queue."
  value       = aws_sqs_queue.this.name
}

output "queue_visibility_timeout_seconds" {
  description = "Visibility timeout of the task queue, derived from the function timeout and batching window."
  value       = aws_sqs_queue.this.visibility_timeout_seconds
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue; messages that failed max_receive_count times land here."
  value       = aws_sqs_queue.dlq.url
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue (e.g. for a redrive back to the task queue)."
  value       = aws_sqs_queue.dlq.arn
}

output "results_bucket" {
  description = "Name of the results bucket (RESULTS_BUCKET of the function)."
  value       = aws_s3_bucket.results.id
}

output "results_bucket_arn" {
  description = "ARN of the results bucket (grant s3:GetObject on <arn>/<prefix>/* to readers)."
  value       = aws_s3_bucket.results.arn
}

output "results_prefix" {
  description = "Key prefix of result objects (RESULTS_PREFIX): results are <prefix>/<task_id>.out, errors <prefix>/<task_id>.err."
  value       = var.results_prefix
}

output "results_layout" {
  description = "How results are written (RESULTS_LAYOUT): \"per_task\" (<prefix>/<task_id>.out|.err) or \"packed\" (<prefix>/packed/<sha256>.jsonl, one per batch)."
  value       = var.results_layout
}

output "batch_size" {
  description = "Maximum messages per invocation of the event source mapping (one packed object per batch in the packed layout)."
  value       = var.batch_size
}

output "lambda_memory_size" {
  description = "Memory of the function in MB (its GB-s price scales with it)."
  value       = var.lambda_memory_size
}

output "function_name" {
  description = "Name of the worker Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the worker Lambda function."
  value       = aws_lambda_function.this.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the function (JSON logs)."
  value       = aws_cloudwatch_log_group.this.name
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.this.arn
}

output "event_source_mapping_uuid" {
  description = "UUID of the SQS event source mapping (to enable/disable polling with the AWS CLI)."
  value       = aws_lambda_event_source_mapping.this.uuid
}

output "worker_role_arn" {
  description = "ARN of the `adder work` role (null unless create_worker_role)."
  value       = try(aws_iam_role.worker[0].arn, null)
}

output "worker_instance_profile" {
  description = "Instance profile name to launch `adder work` EC2 instances with (null unless create_worker_role)."
  value       = try(aws_iam_instance_profile.worker[0].name, null)
}

output "worker_cloud_config" {
  description = "The cloud config `adder work` reads, ready to use: `terraform output -json worker_cloud_config > cloud-config.json`, then `adder work --config cloud-config.json` (provider, job_id = name, queue_name, result_bucket, result_prefix, config.region and config.results_layout, as the function has them). Workers are competing consumers of the task queue (beside the function, or alone with event_source_mapping_enabled = false), so every worker takes the same file. No credentials: the worker's role gives them (create_worker_role). In an Auto Scaling group with a termination hook, add config.lifecycle_hook and config.autoscaling_group."
  value = {
    provider   = "aws"
    job_id     = var.name
    queue_name = aws_sqs_queue.this.name
    # `bucket`, not `id`: known at plan time when results_bucket_name is set.
    result_bucket = aws_s3_bucket.results.bucket
    result_prefix = var.results_prefix
    config = {
      region         = var.region
      results_layout = var.results_layout
    }
  }
}
