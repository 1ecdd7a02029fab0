# The function's runtime settings, derived from variables alone (no resource here): request
# concurrency, CPU and memory, the results layout and the settings of the function's server.
# Cloud Run's rules for them are checked at plan time by the preconditions of the outputs
# below, and tests/infra runs this file with variables.tf through terraform offline (the
# google provider is not needed for it).

locals {
  # function_memory in MiB: M and G are powers of 10, Mi and Gi powers of 2.
  memory_units = { M = 1000000 / 1048576, Mi = 1, G = 1000000000 / 1048576, Gi = 1024 }
  memory_mib   = tonumber(regex("^[0-9]+", var.function_memory)) * local.memory_units[regex("[A-Za-z]+$", var.function_memory)]

  # With function_cpu null the platform derives the CPU from the memory, and 1 vCPU or more
  # from 2 GiB up ("Configure memory and vCPU limits", Cloud Run functions).
  cpu_given         = var.function_cpu != null
  function_vcpus    = local.cpu_given ? tonumber(var.function_cpu) : (local.memory_mib >= 2048 ? 1 : 0)
  function_cpu_text = local.cpu_given ? "${var.function_cpu} vCPU" : "derived from function_memory (under 1 vCPU below 2 GiB)"

  # Cloud Run's memory range for a CPU ("Configure CPU limits for services").
  memory_mib_range = (
    local.function_vcpus < 0.5 ? [0, 512] :
    local.function_vcpus < 1 ? [0, 1024] :
    local.function_vcpus == 1 ? [0, 4096] :
    local.function_vcpus == 2 ? [0, 8192] :
    local.function_vcpus == 4 ? [2048, 16384] :
    local.function_vcpus == 6 ? [4096, 24576] : [4096, 32768]
  )

  packed = var.results_layout == "packed"

  # Set on the function next to RESULTS_BUCKET and RESULTS_PREFIX (main.tf). THREADS: the
  # gunicorn threads of functions-framework, one per concurrent request, as Google advises
  # for Python ("Concurrency", Cloud Run functions). In the packed layout a pack holds at
  # most the requests an instance serves at once (PACK_MAX_BATCH).
  function_settings = merge(
    {
      THREADS        = tostring(var.request_concurrency)
      RESULTS_LAYOUT = var.results_layout
    },
    local.packed ? {
      PACK_MAX_BATCH   = tostring(var.request_concurrency)
      PACK_MAX_WAIT_MS = tostring(var.pack_max_wait_ms)
    } : {},
  )
}

output "request_concurrency" {
  description = "Requests one function instance serves at once (max_instance_request_concurrency, and the THREADS of its server)."
  value       = var.request_concurrency

  precondition {
    condition     = var.request_concurrency == 1 || local.function_vcpus >= 1
    error_message = "A request_concurrency above 1 needs at least 1 vCPU per instance (Cloud Run allows concurrency 1 only below 1 vCPU): set function_cpu to \"1\" or more, or request_concurrency to 1; function_cpu is ${local.function_cpu_text}."
  }
}

output "function_memory" {
  description = "Memory of one function instance (available_memory); its CPU is function_cpu."
  value       = var.function_memory

  precondition {
    condition     = !local.cpu_given || (local.memory_mib >= local.memory_mib_range[0] && local.memory_mib <= local.memory_mib_range[1])
    error_message = "The function_memory ${var.function_memory} is outside what Cloud Run allows for ${local.function_cpu_text}: ${local.memory_mib_range[0]} to ${local.memory_mib_range[1]} MiB (under 0.5 vCPU at most 512 MiB, under 1 vCPU at most 1 GiB, 1 vCPU 4 GiB, 2 vCPU 8 GiB, 4 vCPU 2-16 GiB, 6 vCPU 4-24 GiB, 8 vCPU 4-32 GiB)."
  }
}

output "function_cpu" {
  description = "vCPUs of one function instance (available_cpu); null: derived by the platform from function_memory."
  value       = var.function_cpu
}

output "results_layout" {
  description = "How the function writes results (RESULTS_LAYOUT): per_task (<prefix>/<task_id>.out|.err) or packed (<prefix>/packed/<hash>.jsonl, one pack per batch of concurrent requests)."
  value       = var.results_layout

  precondition {
    condition     = !local.packed || var.pack_max_wait_ms * 2 <= var.function_timeout_seconds * 1000
    error_message = "The pack_max_wait_ms must be at most half the function timeout (${var.function_timeout_seconds} s): every request of a pack waits for the window and then the write."
  }
}
