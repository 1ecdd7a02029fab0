output "project_id" {
  description = "Project the stack is deployed in (pass it to the google-cloud clients / gcloud)."
  value       = var.project_id
}

output "region" {
  description = "Region of the function and its Cloud Run service."
  value       = var.region
}

output "topic_id" {
  description = "Full ID of the task topic (projects/<project>/topics/<name>); publish task JSON messages here (roles/pubsub.publisher)."
  value       = google_pubsub_topic.this.id
}

output "topic_name" {
  description = "Short name of the task topic."
  value       = google_pubsub_topic.this.name
}

output "task_subscription" {
  description = "Full ID of the push subscription that delivers tasks to the function (carries the dead-letter and retry policies), or null with push_to_function = false."
  value       = one(google_pubsub_subscription.this[*].id)
}

output "ack_deadline_seconds" {
  description = "Ack deadline (= push request timeout) of the task subscription, derived from the function timeout, or null with push_to_function = false."
  value       = one(google_pubsub_subscription.this[*].ack_deadline_seconds)
}

output "dead_letter_topic" {
  description = "Full ID of the dead-letter topic; messages that failed max_delivery_attempts times are forwarded here."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Full ID of the pull subscription that keeps dead-lettered messages for inspection or replay."
  value       = google_pubsub_subscription.dead_letter.id
}

output "results_bucket" {
  description = "Name of the results bucket (RESULTS_BUCKET of the function)."
  value       = google_storage_bucket.results.name
}

output "results_prefix" {
  description = "Object name prefix of results (RESULTS_PREFIX): results are <prefix>/<task_id>.out, errors <prefix>/<task_id>.err."
  value       = var.results_prefix
}

output "function_name" {
  description = "Name of the Cloud Run function (also the name of its Cloud Run service)."
  value       = google_cloudfunctions2_function.this.name
}

output "function_uri" {
  description = "run.app URI of the function's Cloud Run service (the push endpoint; internal ingress only, IAM-protected)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "function_service_account" {
  description = "Email of the function's runtime service account."
  value       = google_service_account.function.email
}

output "invoker_service_account" {
  description = "Email of the service account whose OIDC token Pub/Sub attaches to each push."
  value       = google_service_account.invoker.email
}

output "source_object" {
  description = "gs:// URL of the deployed source zip (its name carries the zip's SHA-256)."
  value       = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.source.name}"
}

output "log_bucket" {
  description = "ID of the dedicated log bucket holding the function's logs, or null when log_retention_days is null."
  value       = one(google_logging_project_bucket_config.this[*].id)
}

output "worker_subscription" {
  description = "Full ID of the pull subscription `adder work` pulls (config.subscription of its cloud config), or null without create_worker_subscription."
  value       = try(google_pubsub_subscription.worker[0].id, null)
}

output "worker_service_account" {
  description = "Email of the service account `adder work` runs as (attach it to the VM or workload), or null without create_worker_subscription."
  value       = try(google_service_account.worker[0].email, null)
}

# What `adder work` reads from its --config file (core/worker/command.py, and config.project
# and config.subscription in gcp_function/pubsub_receiver.py): the worker_cloud_config output.
locals {
  worker_cloud_config = {
    provider      = "gcp"
    job_id        = var.name
    queue_name    = google_pubsub_topic.this.name
    result_bucket = google_storage_bucket.results.name
    result_prefix = var.results_prefix
    config = {
      project        = var.project_id
      subscription   = one(google_pubsub_subscription.worker[*].id)
      results_layout = var.results_layout
    }
  }
}

output "worker_cloud_config" {
  description = "The cloud config `adder work` reads, ready to use: `terraform output -json worker_cloud_config > cloud-config.json`, then `adder work --config cloud-config.json` (provider, job_id = name, queue_name = the topic, result_bucket, result_prefix, config.project, config.subscription = the worker pull subscription's full ID, config.results_layout). Every worker takes the same file: they share the one worker subscription. Null without create_worker_subscription (terraform keeps no null output: `terraform output worker_cloud_config` then says it is not found): there is no subscription for a worker to pull (the function's push subscription is not one). No credentials: run the worker as worker_service_account."
  value       = var.create_worker_subscription ? local.worker_cloud_config : null
}
