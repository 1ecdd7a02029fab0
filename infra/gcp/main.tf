locals {
  function_name = "${var.name}-worker"
  topic_name    = "${var.name}-tasks"

  # Fixed by docs/design.md: HTTP handler `process_task` (Pub/Sub push) in main.py, Python 3.12.
  function_runtime     = "python312"
  function_entry_point = "process_task"

  source_zip_path   = can(regex("^(/|[A-Za-z]:[/\\\\])", var.source_zip_path)) ? var.source_zip_path : "${path.module}/${var.source_zip_path}"
  source_zip_sha256 = filesha256(local.source_zip_path)

  bucket_location     = upper(coalesce(var.bucket_location, var.region))
  results_bucket_name = coalesce(var.results_bucket_name, "${var.project_id}-${var.name}-results")
  source_bucket_name  = "${var.project_id}-${var.name}-source"

  # Objects are "{prefix}/{task_id}.out|.err", or "{task_id}.out|.err" with an empty prefix.
  results_key_prefix = var.results_prefix == "" ? "" : "${var.results_prefix}/"

  # Custom role IDs allow [a-zA-Z0-9_.] only; a destroyed role's ID stays taken for
  # up to 37 days, hence the override (see README.md, "Least privilege").
  results_writer_role_id = coalesce(var.results_writer_role_id, "${replace(var.name, "-", "_")}_results_writer")

  # For a push subscription the ack deadline is also the HTTP request timeout
  # (10-600 s). It must not be shorter than the function timeout, or Pub/Sub
  # redelivers a task that is still running (anchors pitfall 2).
  ack_deadline_seconds = min(600, var.function_timeout_seconds + 30)

  # Google-managed Pub/Sub service agent: forwards dead letters and mints push OIDC tokens.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])
}

data "google_project" "this" {
  project_id = var.project_id
}

#######
# APIs
#######

resource "google_project_service" "this" {
  for_each = var.enable_apis ? local.apis : toset([])

  project = var.project_id
  service = each.value

  # Other workloads in the project may depend on these APIs.
  disable_on_destroy         = false
  disable_dependent_services = false
}

###################
# Service accounts
###################

resource "google_service_account" "function" {
  account_id   = local.function_name
  display_name = "${local.function_name} runtime"
  description  = "Runtime identity of the ${local.function_name} function: may only create and replace result objects."

  depends_on = [google_project_service.this]
}

resource "google_service_account" "invoker" {
  account_id   = "${var.name}-invoker"
  display_name = "${local.function_name} Pub/Sub invoker"
  description  = "Identity in the OIDC token of the task push subscription: may only invoke the ${local.function_name} Cloud Run service."

  depends_on = [google_project_service.this]
}

#########
# Pub/Sub
#########

resource "google_pubsub_topic" "this" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; a CMEK would need key grants for the Pub/Sub, Cloud Storage, Cloud Run and Artifact Registry service agents and a key lifecycle outside this stack.
  name = local.topic_name

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; see the task topic.
  name = "${local.topic_name}-dead-letter"

  depends_on = [google_project_service.this]
}

# Without a subscription, messages forwarded to the dead-letter topic are dropped.
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${local.topic_name}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention_duration

  # Never delete the subscription for inactivity (the default TTL is 31 days).
  expiration_policy {
    ttl = ""
  }
}

# Delivery: a push subscription owned by this stack (the documented "direct
# Pub/Sub trigger") instead of an Eventarc event_trigger, whose generated
# subscription cannot be given a dead-letter policy from Terraform. Without it
# (push_to_function = false, workers only) the function stays deployed and idle.
resource "google_pubsub_subscription" "this" {
  count = var.push_to_function ? 1 : 0

  name                       = "${local.topic_name}-push"
  topic                      = google_pubsub_topic.this.id
  ack_deadline_seconds       = local.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = ""
  }

  push_config {
    # The run.app URL: only with it do pushes from this project count as internal ingress.
    push_endpoint = google_cloudfunctions2_function.this.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = var.minimum_backoff
    maximum_backoff = var.maximum_backoff
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_service_account_iam_member.pubsub_token_creator,
  ]

  lifecycle {
    precondition {
      condition     = local.ack_deadline_seconds >= var.function_timeout_seconds
      error_message = "The ack deadline (push request timeout) must not be shorter than the function timeout."
    }

    precondition {
      condition     = tonumber(trimsuffix(var.maximum_backoff, "s")) >= tonumber(trimsuffix(var.minimum_backoff, "s"))
      error_message = "The maximum_backoff must not be shorter than the minimum_backoff."
    }
  }
}

# The Pub/Sub service agent forwards undeliverable messages: it must publish to
# the dead-letter topic and acknowledge them on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  count = var.push_to_function ? 1 : 0

  subscription = google_pubsub_subscription.this[0].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Both were unconditional before push_to_function: existing states keep them.
moved {
  from = google_pubsub_subscription.this
  to   = google_pubsub_subscription.this[0]
}

moved {
  from = google_pubsub_subscription_iam_member.dead_letter_subscriber
  to   = google_pubsub_subscription_iam_member.dead_letter_subscriber[0]
}

# Needed for authenticated push only when the Pub/Sub service agent predates
# 8 April 2021; scoped to the invoker account, never project-wide.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  count = var.grant_pubsub_token_creator ? 1 : 0

  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

##########
# Buckets
##########

resource "google_storage_bucket" "results" {
  #checkov:skip=CKV_GCP_62:Usage/storage access logs need a second bucket per stack; object access is auditable with Cloud Audit Logs data-access logs.
  name                        = local.results_bucket_name
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = var.bucket_versioning_enabled
  }

  dynamic "lifecycle_rule" {
    for_each = var.results_expiration_days == null ? [] : [var.results_expiration_days]

    content {
      action {
        type = "Delete"
      }

      condition {
        age            = lifecycle_rule.value
        matches_prefix = local.results_key_prefix == "" ? null : [local.results_key_prefix]
        with_state     = "LIVE"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.bucket_versioning_enabled && var.noncurrent_version_expiration_days != null ? [var.noncurrent_version_expiration_days] : []

    content {
      action {
        type = "Delete"
      }

      condition {
        days_since_noncurrent_time = lifecycle_rule.value
        with_state                 = "ARCHIVED"
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Usage/storage access logs need a second bucket per stack; the bucket only holds deployment zips written by Terraform.
  name                        = local.source_bucket_name
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = true
  }

  dynamic "lifecycle_rule" {
    for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]

    content {
      action {
        type = "Delete"
      }

      condition {
        days_since_noncurrent_time = lifecycle_rule.value
        with_state                 = "ARCHIVED"
      }
    }
  }

  depends_on = [google_project_service.this]
}

# The content hash in the object NAME makes every code change a new object, so
# the function is rebuilt (terraform-provider-google#1938, #3793).
resource "google_storage_bucket_object" "source" {
  name         = "${local.function_name}/${local.source_zip_sha256}.zip"
  bucket       = google_storage_bucket.source.name
  source       = local.source_zip_path
  content_type = "application/zip"
}

# The function writes {prefix}/{id}.out|.err and must be able to write them
# again: Pub/Sub delivers at least once, and a re-submitted task id replaces its
# result. Replacing an existing object needs storage.objects.delete as well as
# storage.objects.create (roles/storage.objectCreator alone answers 403 to every
# retry of an already written task, which would then loop until dead-lettered).
# This custom role holds exactly those two permissions: no get, list or update.
resource "google_project_iam_custom_role" "results_writer" {
  project     = var.project_id
  role_id     = local.results_writer_role_id
  title       = "${local.function_name} results writer"
  description = "Create and replace result objects (storage.objects.create + storage.objects.delete); bound on the results bucket under the results prefix only."
  permissions = ["storage.objects.create", "storage.objects.delete"]

  depends_on = [google_project_service.this]
}

# Bound on the results bucket only, and only for objects under the prefix.
resource "google_storage_bucket_iam_member" "function_results" {
  bucket = google_storage_bucket.results.name
  role   = google_project_iam_custom_role.results_writer.name
  member = google_service_account.function.member

  dynamic "condition" {
    for_each = local.results_key_prefix == "" ? [] : [local.results_key_prefix]

    content {
      title       = "results-prefix-only"
      description = "Only objects under ${condition.value}"
      expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.results.name}/objects/${condition.value}\")"
    }
  }
}

###########
# Function
###########

resource "google_cloudfunctions2_function" "this" {
  name        = local.function_name
  location    = var.region
  description = "Adds the two numbers of each Pub/Sub task and writes the result to Cloud Storage."

  build_config {
    runtime         = local.function_runtime
    entry_point     = local.function_entry_point
    service_account = var.build_service_account

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory = var.function_memory
    # Cloud Run's rules for CPU, memory and concurrency are checked at plan time by the
    # preconditions of the outputs in function_settings.tf.
    available_cpu                    = var.function_cpu
    timeout_seconds                  = var.function_timeout_seconds
    min_instance_count               = 0
    max_instance_count               = var.max_instance_count
    max_instance_request_concurrency = var.request_concurrency
    # Pub/Sub pushes from the same project to the run.app URL are internal
    # traffic (Cloud Run "Restricting ingress"); IAM (run.invoker) still applies.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.function.email

    # THREADS, RESULTS_LAYOUT and, packed, PACK_MAX_BATCH/PACK_MAX_WAIT_MS: function_settings.tf
    environment_variables = merge(local.function_settings, {
      RESULTS_BUCKET = google_storage_bucket.results.name
      RESULTS_PREFIX = var.results_prefix
    })
  }

  depends_on = [
    google_project_service.this,
    google_storage_bucket_iam_member.function_results,
  ]
}

# Invocation is granted on this function's Cloud Run service only (a gen2
# function's service has the function's name).
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.this.location
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

##########
# Logging
##########

# Optional longer retention: a copy of the function's logs goes to a dedicated
# log bucket. A same-project log bucket needs no grant for the sink's writer.
resource "google_logging_project_bucket_config" "this" {
  count = var.log_retention_days == null ? 0 : 1

  project        = var.project_id
  location       = var.log_bucket_location
  bucket_id      = "${local.function_name}-logs"
  retention_days = var.log_retention_days
  description    = "Logs of the ${local.function_name} function, kept ${var.log_retention_days} days."

  depends_on = [google_project_service.this]
}

resource "google_logging_project_sink" "this" {
  count = var.log_retention_days == null ? 0 : 1

  name        = "${local.function_name}-logs"
  description = "Routes the ${local.function_name} function's logs to its log bucket."
  destination = "logging.googleapis.com/${google_logging_project_bucket_config.this[0].id}"
  filter      = "(resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.function_name}\") OR (resource.type=\"cloud_function\" AND resource.labels.function_name=\"${local.function_name}\")"

  unique_writer_identity = true
}

#########################################
# Worker (`adder work`, optional)
#########################################

# A pull subscription of the task topic for `adder work` on VMs and containers, with the
# same dead-letter and retry policies as the push subscription. A topic delivers every
# message to every subscription: while the function's push subscription exists too, each
# task is processed by the function AND by a worker (same results, twice the work), so
# push_to_function = false runs workers only.
resource "google_pubsub_subscription" "worker" {
  count = var.create_worker_subscription ? 1 : 0

  name                       = "${local.topic_name}-worker"
  topic                      = google_pubsub_topic.this.id
  ack_deadline_seconds       = var.worker_ack_deadline_seconds
  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = ""
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = var.minimum_backoff
    maximum_backoff = var.maximum_backoff
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Dead-lettering from this subscription: the Pub/Sub service agent acknowledges the
# forwarded messages on it (it already publishes to the dead-letter topic, see above).
resource "google_pubsub_subscription_iam_member" "worker_dead_letter_subscriber" {
  count = var.create_worker_subscription ? 1 : 0

  subscription = google_pubsub_subscription.worker[0].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The identity `adder work` runs as (attach it to the VM, instance template or GKE/Cloud Run
# workload): it pulls the worker subscription and writes results, nothing else.
resource "google_service_account" "worker" {
  count = var.create_worker_subscription ? 1 : 0

  account_id   = "${var.name}-puller"
  display_name = "${var.name} queue worker (adder work)"
  description  = "Identity of adder work on VMs and containers: pulls ${local.topic_name}-worker and creates or replaces result objects."

  depends_on = [google_project_service.this]
}

resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  count = var.create_worker_subscription ? 1 : 0

  subscription = google_pubsub_subscription.worker[0].id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.worker[0].member
}

# The function's results writer role (create + delete: a redelivered task replaces its
# result), on the results bucket only and under the prefix only, as for the function.
resource "google_storage_bucket_iam_member" "worker_results" {
  count = var.create_worker_subscription ? 1 : 0

  bucket = google_storage_bucket.results.name
  role   = google_project_iam_custom_role.results_writer.name
  member = google_service_account.worker[0].member

  dynamic "condition" {
    for_each = local.results_key_prefix == "" ? [] : [local.results_key_prefix]

    content {
      title       = "results-prefix-only"
      description = "Only objects under ${condition.value}"
      expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.results.name}/objects/${condition.value}\")"
    }
  }
}
