locals {
  function_name   = "${var.name}-worker"
  queue_name      = "${var.name}-tasks"
  dlq_name        = "${var.name}-tasks-dlq"
  log_group_name  = "/aws/lambda/${local.function_name}"
  lambda_handler  = "aws_lambda.handler.lambda_handler"
  lambda_runtime  = "python3.13"
  lambda_zip_path = can(regex("^(/|[A-Za-z]:[/\\\\])", var.lambda_zip_path)) ? var.lambda_zip_path : "${path.module}/${var.lambda_zip_path}"

  # AWS: visibility timeout >= 6 x function timeout + batching window
  # (services-sqs-configure); SQS caps it at 12 h.
  visibility_timeout_seconds = min(
    43200,
    max(
      6 * var.function_timeout_seconds + var.maximum_batching_window_in_seconds,
      coalesce(var.min_visibility_timeout_seconds, 0),
    ),
  )

  # Objects are "{prefix}/{task_id}.out|.err", or "{task_id}.out|.err" with an empty prefix.
  results_key_prefix = var.results_prefix == "" ? "" : "${var.results_prefix}/"

  # The worker's Auto Scaling groups as ARNs (a name: this stack's partition, region and
  # account, read from the queue's ARN; any group id, which changes when a group is recreated).
  queue_arn_parts = split(":", aws_sqs_queue.this.arn)
  worker_autoscaling_group_arns = [
    for group in var.worker_autoscaling_groups :
    startswith(group, "arn:") ? group : "arn:${local.queue_arn_parts[1]}:autoscaling:${var.region}:${local.queue_arn_parts[4]}:autoScalingGroup:*:autoScalingGroupName/${group}"
  ]
}

#########
# Queues
#########

resource "aws_sqs_queue" "dlq" {
  name                      = local.dlq_name
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = var.kms_key_arn == null ? true : null
  kms_master_key_id         = var.kms_key_arn
}

resource "aws_sqs_queue" "this" {
  name                       = local.queue_name
  visibility_timeout_seconds = local.visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  sqs_managed_sse_enabled    = var.kms_key_arn == null ? true : null
  kms_master_key_id          = var.kms_key_arn

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Only the task queue may use the DLQ as its dead-letter target.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this.arn]
  })
}

#################
# Results bucket
#################

resource "aws_s3_bucket" "results" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed: every result can be recomputed from its task, and a replica doubles cost.
  #checkov:skip=CKV_AWS_18:Server access logging needs a second (log) bucket per stack; object-level auditing belongs to the account's CloudTrail data events.
  #checkov:skip=CKV2_AWS_62:Nothing consumes result-object events; producers read results by key.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) by default is a deliberate choice for non-sensitive arithmetic results; set var.kms_key_arn to use SSE-KMS with a customer-managed key.
  bucket        = var.results_bucket_name
  bucket_prefix = var.results_bucket_name == null ? "${var.name}-results-" : null
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "results" {
  bucket = aws_s3_bucket.results.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "results" {
  bucket = aws_s3_bucket.results.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "results" {
  bucket = aws_s3_bucket.results.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_versioning" "results" {
  bucket = aws_s3_bucket.results.id

  versioning_configuration {
    status = var.bucket_versioning_enabled ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "results" {
  #checkov:skip=CKV_AWS_300:False positive: the first rule aborts incomplete multipart uploads bucket-wide after 7 days; checkov 3.3 ignores static rule blocks when dynamic rule blocks sit beside them.
  bucket = aws_s3_bucket.results.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  dynamic "rule" {
    for_each = var.results_expiration_days == null ? [] : [var.results_expiration_days]

    content {
      id     = "expire-results"
      status = "Enabled"

      filter {
        prefix = local.results_key_prefix
      }

      expiration {
        days = rule.value
      }
    }
  }

  dynamic "rule" {
    for_each = var.bucket_versioning_enabled && var.noncurrent_version_expiration_days != null ? [var.noncurrent_version_expiration_days] : []

    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"

      filter {}

      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }
    }
  }

  # Lifecycle rules on a versioned bucket must be written after versioning is set.
  depends_on = [aws_s3_bucket_versioning.results]
}

data "aws_iam_policy_document" "results_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.results.arn,
      "${aws_s3_bucket.results.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "results" {
  bucket = aws_s3_bucket.results.id
  policy = data.aws_iam_policy_document.results_bucket.json

  # PutBucketPolicy fails while a public access block is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.results]
}

######
# IAM
######

data "aws_iam_policy_document" "assume_role" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = local.function_name
  description        = "Execution role of the ${local.function_name} Lambda function."
  assume_role_policy = data.aws_iam_policy_document.assume_role.json
}

data "aws_iam_policy_document" "this" {
  # What the SQS event source mapping needs (same as AWSLambdaSQSQueueExecutionRole,
  # scoped to this queue). ChangeMessageVisibility is not granted: the handler
  # reports partial failures instead of changing visibility itself.
  statement {
    sid = "ConsumeTaskQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.this.arn]
  }

  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.results.arn}/${local.results_key_prefix}*"]
  }

  statement {
    sid = "WriteOwnLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
    ]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  # Only with a customer-managed key: decrypt SQS messages, encrypt S3 objects.
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid = "UseCustomerManagedKey"
      actions = [
        "kms:Decrypt",
        "kms:GenerateDataKey",
      ]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${local.function_name}-least-privilege"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

###########
# Function
###########

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest by default; a customer-managed key is opt-in via var.kms_key_arn (it needs a key policy for the Logs service).
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:No VPC needed: the function only calls the public S3 and SQS endpoints and reaches no private resource.
  #checkov:skip=CKV_AWS_116:A function-level DLQ applies to asynchronous invocations only; failed SQS messages go to the queue's redrive DLQ (aws_sqs_queue.dlq).
  #checkov:skip=CKV_AWS_272:Code signing is out of scope: the zip is built reproducibly by `adder package aws` and deployed by Terraform itself.
  #checkov:skip=CKV_AWS_50:X-Ray tracing is off: xray:PutTraceSegments needs Resource "*", which the least-privilege policy avoids; JSON logs carry the request ids.
  #checkov:skip=CKV_AWS_115:Concurrency is bounded by the event source mapping's scaling_config.maximum_concurrency; reserved concurrency would also carve capacity out of the account pool.
  #checkov:skip=CKV_AWS_173:The environment holds only the bucket name, key prefix and results layout, no secrets; a customer-managed key is used when var.kms_key_arn is set.
  function_name    = local.function_name
  description      = "Adds the two numbers of each SQS task and writes the result to S3."
  role             = aws_iam_role.this.arn
  handler          = local.lambda_handler
  runtime          = local.lambda_runtime
  architectures    = ["arm64"]
  memory_size      = var.lambda_memory_size
  timeout          = var.function_timeout_seconds
  filename         = local.lambda_zip_path
  source_code_hash = filebase64sha256(local.lambda_zip_path)
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = {
      RESULTS_BUCKET = aws_s3_bucket.results.id
      RESULTS_PREFIX = var.results_prefix
      RESULTS_LAYOUT = var.results_layout
    }
  }

  logging_config {
    log_format            = "JSON"
    application_log_level = var.application_log_level
    system_log_level      = var.system_log_level
    log_group             = aws_cloudwatch_log_group.this.name
  }

  depends_on = [
    aws_cloudwatch_log_group.this,
    aws_iam_role_policy.this,
  ]
}

resource "aws_lambda_event_source_mapping" "this" {
  event_source_arn                   = aws_sqs_queue.this.arn
  function_name                      = aws_lambda_function.this.arn
  enabled                            = var.event_source_mapping_enabled
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.maximum_concurrency
  }

  # Lambda validates the role's SQS permissions when the mapping is created.
  depends_on = [aws_iam_role_policy.this]

  lifecycle {
    precondition {
      condition     = var.batch_size <= 10 || var.maximum_batching_window_in_seconds >= 1
      error_message = "A batch_size above 10 requires maximum_batching_window_in_seconds >= 1."
    }

    precondition {
      condition     = local.visibility_timeout_seconds >= var.function_timeout_seconds
      error_message = "The queue visibility timeout must not be shorter than the function timeout."
    }
  }
}

#########################################
# Queue-pulling worker (`adder work`), optional
#########################################

data "aws_iam_policy_document" "worker_assume_role" {
  count = var.create_worker_role ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = var.worker_trusted_services
    }
  }
}

resource "aws_iam_role" "worker" {
  count = var.create_worker_role ? 1 : 0

  name               = "${var.name}-queue-worker"
  description        = "Role of `adder work` instances or tasks pulling from ${local.queue_name}."
  assume_role_policy = data.aws_iam_policy_document.worker_assume_role[0].json
}

data "aws_iam_policy_document" "worker" {
  count = var.create_worker_role ? 1 : 0

  # The worker finds the queue by name, reads its visibility timeout, long-polls it, extends
  # the lease of tasks in hand (and releases them on a termination notice) and deletes what
  # it has written. Its logs go to stdout (journald or the container's log driver).
  statement {
    sid = "WorkTaskQueue"
    actions = [
      "sqs:GetQueueUrl",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
    ]
    resources = [aws_sqs_queue.this.arn]
  }

  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.results.arn}/${local.results_key_prefix}*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid = "UseCustomerManagedKey"
      actions = [
        "kms:Decrypt",
        "kms:GenerateDataKey",
      ]
      resources = [statement.value]
    }
  }

  # Once drained after an Auto Scaling termination notice, the worker completes the group's
  # lifecycle action (CONTINUE) so the instance goes at once: one statement per group, scoped
  # by its autoScalingGroup ARN (the action has no lifecycle hook resource or condition key).
  dynamic "statement" {
    for_each = local.worker_autoscaling_group_arns

    content {
      sid       = "CompleteTerminationLifecycleAction${statement.key}"
      actions   = ["autoscaling:CompleteLifecycleAction"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  count = var.create_worker_role ? 1 : 0

  name   = "${var.name}-queue-worker-least-privilege"
  role   = aws_iam_role.worker[0].id
  policy = data.aws_iam_policy_document.worker[0].json
}

resource "aws_iam_instance_profile" "worker" {
  count = var.create_worker_role ? 1 : 0

  name = "${var.name}-queue-worker"
  role = aws_iam_role.worker[0].name
}
