# Names and routes, computed from variables and the routing table only (no resources), so the
# tests can evaluate this file with `terraform console` offline and compare it with the code.

locals {
  # The same file the code reads (shared/routing.py): services and filters cannot drift from it.
  routing_table = jsondecode(file("${path.module}/../shared/routing.json"))
  routing       = local.routing_table.routes

  # Each route's event types: the table's list, or for a route whose event_types is the string
  # "hook_events" (shared/routing.py, HOOK_EVENTS), the deployment's var.hook_events. (The
  # tolist() of that string fails, but only in the branch not taken.)
  route_event_types = {
    for name, route in local.routing : name => (
      route.event_types == "hook_events" ? var.hook_events : tolist(route.event_types)
    )
  }
  # The routes that get a push subscription: those with event types. An empty filter would
  # receive every event, so the hooks route has none until hook_events names some.
  subscribed_routes = {
    for name, route in local.routing : name => route if length(local.route_event_types[name]) > 0
  }

  # Pub/Sub's filter language; a trailing * in the table is a prefix match.
  route_filters = {
    for name, event_types in local.route_event_types : name => join(" OR ", [
      for t in event_types :
      endswith(t, "*")
      ? "hasPrefix(attributes.event_type, \"${trimsuffix(t, "*")}\")"
      : "attributes.event_type = \"${t}\""
    ])
  }
  # Pub/Sub's limit on a filter's length (shared/routing.py, MAX_FILTER_BYTES); the push
  # subscription checks it in a precondition, since a validation of hook_events cannot read
  # the filter built from it. Event types are ASCII (variables.tf), so characters are bytes.
  max_filter_bytes = 256

  # Names as shared/names.py derives them (a test compares the two).
  events_topic                  = "${var.name_prefix}-events"
  quarantine_topic              = "${var.name_prefix}-quarantine"
  quarantine_watch_subscription = "${local.quarantine_topic}-watch"
  dead_letter_topics            = { for name, _ in local.routing : name => "${var.name_prefix}-${name}-dead-letter" }
  dead_letter_watch_subscriptions = {
    for name, topic in local.dead_letter_topics : name => "${topic}-watch"
  }
  subscriptions = { for name, _ in local.routing : name => "${var.name_prefix}-${name}" }

  # Every Cloud Run service the image runs, as the routing table lists them: the ones Pub/Sub
  # pushes a route's events to, and the backfill worker, which Cloud Tasks calls.
  handler_services = toset(keys(local.routing_table.services))
  worker_service = one([
    for name, service in local.routing_table.services : name if try(service.called_by, "pubsub") == "tasks"
  ])
  # Services Pub/Sub pushes to: those with a subscribed route (the hooks service has none
  # while hook_events is empty, and then nobody may invoke it).
  routed_services = toset([for route in local.subscribed_routes : route.service])
  # The reconciler, which Cloud Scheduler calls (reconciler.tf); a set, empty without one.
  reconciler_services = toset([
    for name, service in local.routing_table.services : name if try(service.called_by, "pubsub") == "scheduler"
  ])
  # Services that enqueue backfill chunks: the scheduler's service, and the worker (next chunk).
  backfill_services = toset([
    for name, service in local.routing_table.services : name if try(service.enqueues_backfills, false)
  ])
  # Routes each service receives, so it may dead-letter only into its own routes' topics.
  routes_by_service = {
    for service in local.routed_services : service => [
      for name, route in local.subscribed_routes : name if route.service == service
    ]
  }
  # The services that run a route from hook_events (they read HOOK_EVENTS), and those that run
  # the alerts handler (REPEATED_FAILURE_THRESHOLD), as the routing table names them.
  hook_event_services = toset([
    for route in local.routing : route.service if route.event_types == "hook_events"
  ])
  alerts_services = toset([
    for route in local.routing : route.service if route.handler == "handlers.alerts"
  ])

  # Every handler service imports the hook modules at start-up, so every one gets the hooks'
  # settings and secrets, and may read exactly those secrets: one grant per (service, secret).
  hook_secret_ids = toset(values(var.hook_secrets))
  hook_secret_grants = merge([
    for service in local.handler_services : {
      for secret in local.hook_secret_ids : "${service}/${secret}" => {
        service = service
        secret  = secret
      }
    }
  ]...)

  ingest_function = "${var.name_prefix}-ingest"
  run_service_names = {
    for service in local.handler_services : service => "${var.name_prefix}-${service}"
  }
  tasks_queue             = "${var.name_prefix}-backfills"
  webhook_secret          = "${var.name_prefix}-webhook-secrets"
  supaglue_api_key_secret = "${var.name_prefix}-supaglue-api-key"
  scheduler_account       = "${var.name_prefix}-scheduler"
  reconcile_job           = "${var.name_prefix}-reconcile"
  archive_subscription    = "${local.events_topic}-archive"
  archive_bucket          = "${var.project_id}-${var.name_prefix}-archive"
  # A pass stops by its time budget; its request, and the scheduler's wait for it, outlast that.
  reconciler_timeout_seconds = var.reconciler.time_budget_seconds + 60
  # A chunk task's dispatch deadline is BACKFILL_CHUNK_SECONDS + 60 (handlers/tasks_queue.py); the
  # worker's request timeout must outlast it, or Cloud Run would cut a chunk Tasks still waits on.
  worker_timeout_seconds = var.backfills.chunk_seconds + 90

  # The function's entry module at the archive's root (ingest.tf), and the files beside it: the
  # function, the shared package and the pinned requirements, nothing else of the repository.
  ingest_entry_module = "from ingest_fn.main import ingest  # noqa: F401\n"
  ingest_source_files = sort(concat(
    tolist(fileset("${path.module}/..", "ingest_fn/**/*.py")),
    tolist(fileset("${path.module}/..", "shared/**/*.{py,json}")),
    ["requirements.txt"],
  ))
}
