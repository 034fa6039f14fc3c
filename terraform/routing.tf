# Names and routes, computed from variables and the routing table only (no resources), so the
# tests can evaluate this file with `terraform console` offline and compare it with the code.

locals {
  # The same file the handlers read (shared/routing.py): filters cannot drift from the code.
  routing = jsondecode(file("${path.module}/../shared/routing.json")).routes

  # Pub/Sub's filter language; a trailing * in the table is a prefix match.
  route_filters = {
    for name, route in local.routing : name => join(" OR ", [
      for t in route.event_types :
      endswith(t, "*")
      ? "hasPrefix(attributes.event_type, \"${trimsuffix(t, "*")}\")"
      : "attributes.event_type = \"${t}\""
    ])
  }

  events_topic     = "${var.name_prefix}-events"
  quarantine_topic = "${var.name_prefix}-quarantine"
  # The handlers derive these from TOPIC_PREFIX (shared/settings.py, HandlerSettings).
  dead_letter_topics = { for name, _ in local.routing : name => "${var.name_prefix}-${name}-dead-letter" }
  subscriptions      = { for name, _ in local.routing : name => "${var.name_prefix}-${name}" }

  # Every Cloud Run service the image runs: one per service in the routing table, and the worker.
  worker_service   = "backfill-worker"
  routed_services  = toset([for route in local.routing : route.service])
  handler_services = setunion(local.routed_services, [local.worker_service])
  # Services that enqueue backfill chunks: the scheduler's service, and the worker (next chunk).
  backfill_services = setunion(
    toset([for name, route in local.routing : route.service if name == "backfill-scheduler"]),
    [local.worker_service],
  )
  # Routes each service receives, so it may dead-letter only into its own routes' topics.
  routes_by_service = {
    for service in local.routed_services : service => [
      for name, route in local.routing : name if route.service == service
    ]
  }

  ingest_function = "${var.name_prefix}-ingest"
  run_service_names = {
    for service in local.handler_services : service => "${var.name_prefix}-${service}"
  }
  tasks_queue = "${var.name_prefix}-backfills"
  # A chunk task's dispatch deadline is BACKFILL_CHUNK_SECONDS + 60 (handlers/backfills.py); the
  # worker's request timeout must outlast it, or Cloud Run would cut a chunk Tasks still waits on.
  worker_timeout_seconds = var.backfills.chunk_seconds + 90

  # The files of the function's source archive (ingest.tf): the function, the shared package
  # and the pinned requirements, nothing else of the repository.
  ingest_source_files = sort(concat(
    tolist(fileset("${path.module}/..", "ingest_fn/**/*.py")),
    tolist(fileset("${path.module}/..", "shared/**/*.{py,json}")),
    ["requirements.txt"],
  ))
}
