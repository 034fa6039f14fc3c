# What the log-based metrics count and how the alerts and the dashboard query them. No
# resources here (monitoring.tf creates the metrics, dashboard.tf the dashboard), so the tests
# evaluate these locals with Terraform itself and compare them with the lines the code writes.

locals {
  # Each metric counts the code's own log lines by their stable `event` field (shared/log.py).
  # Filters are ANDed comparisons and `:*` (the field is present) only: the subset
  # tests/integration/test_log_metrics.py evaluates against the line each code path writes.
  # `labels` maps each metric label to the field of the line it is extracted from.
  log_metrics = {
    sync_failed = {
      filter      = "jsonPayload.event=\"sync_failed\" AND severity=ERROR"
      description = "A Supaglue sync finished with result ERROR (alerts handler)."
      labels      = { provider_name = "jsonPayload.provider_name" }
    }
    reconnect_required = {
      filter      = "jsonPayload.event=\"reconnect_required\""
      description = "A sync paused because the customer's CRM authorisation was lost; they must reconnect."
      labels      = { provider_name = "jsonPayload.provider_name" }
    }
    signature_rejected = {
      filter      = "jsonPayload.event=\"signature_rejected\" AND labels.component=\"ingest\""
      description = "A webhook whose signature or timestamp did not verify (answered 401)."
      labels      = {}
    }
    publish_failed = {
      filter      = "jsonPayload.event=\"publish_failed\" AND labels.component=\"ingest\""
      description = "The ingest function could not get Pub/Sub to confirm a publish (answered 503)."
      labels      = {}
    }
    backfill_failed = {
      filter      = "jsonPayload.event=\"backfill_failed\" AND severity=ERROR"
      description = "A backfill stopped on a permanent error (backfill worker)."
      labels      = {}
    }
    sync_failed_repeatedly = {
      filter      = "jsonPayload.event=\"sync_failed_repeatedly\" AND severity=CRITICAL AND labels.component=\"alerts\""
      description = "The same customer's sync of one object failed alert_thresholds.repeated_sync_failures times in a row (alerts handler)."
      labels      = { provider_name = "jsonPayload.provider_name" }
    }
    events_reconciled = {
      filter      = "jsonPayload.event=\"events_reconciled\" AND labels.component=\"reconciler\""
      description = "An event the reconciler recovered from Supaglue's API: its webhook never arrived."
      labels      = { provider_name = "jsonPayload.provider_name" }
    }
    # The function writes one line per request, and only those carry httpRequest (Cloud Logging
    # lifts it out of the payload); its start-up failure, settings_invalid, has none.
    ingest_requests = {
      filter      = "labels.component=\"ingest\" AND httpRequest.status:*"
      description = "A request the ingest function answered, by the event of its line: webhook_published, webhook_unknown_type, webhook_quarantined (204), signature_rejected (401), payload_too_large (413), publish_failed (503), method_not_allowed, body_incomplete."
      labels      = { event = "jsonPayload.event" }
    }
    # Only the push app's one line per delivery has `outcome` (handlers/app.py); the worker's and
    # the reconciler's request lines, and the lines handlers write on the way, have none.
    deliveries = {
      filter      = "jsonPayload.outcome:*"
      description = "A push delivery a handler answered, by route and by the event of its line (handlers/errors.py): event_handled, duplicate_ignored, not_mine, dead_lettered, retry_later, handler_retry, handler_crashed, lease_lost, unauthenticated."
      labels      = { route = "jsonPayload.handler", event = "jsonPayload.event" }
    }
    backfill_scheduled = {
      filter      = "jsonPayload.event=\"backfill_scheduled\""
      description = "A backfill was recorded and its first chunk enqueued (backfills service); a redelivery's backfill_already_scheduled is not counted."
      labels      = {}
    }
    backfill_completed = {
      filter      = "jsonPayload.event=\"backfill_completed\""
      description = "A backfill's last chunk committed (backfill worker)."
      labels      = {}
    }
  }

  log_metric_label_descriptions = {
    provider_name = "The CRM, as Supaglue names it."
    event         = "The event of the line: what became of the request."
    route         = "The routing table's route (shared/routing.json) the delivery was pushed to."
  }
  log_metric_label_extractors = {
    for name, metric in local.log_metrics : name => {
      for label, field in metric.labels : label => "EXTRACT(${field})"
    }
  }

  log_metric_name = { for name, _ in local.log_metrics : name => "${var.name_prefix}_${name}" }
  metric_type     = { for name, metric in local.log_metric_name : name => "logging.googleapis.com/user/${metric}" }

  # Ingest refusing most requests (a wrong secret after a deploy, the function failing): the
  # share of its requests answered other than 2xx over the window, while it held for as long,
  # and with a few refusals in the window so that one probe on a quiet night is not "most".
  # Cloud Run's own request count, not the function's log lines: it counts what the function
  # never got to log (a crash, a timeout) too. The PromQL names are Cloud Monitoring's mapping
  # of run.googleapis.com/request_count and its resource and metric labels.
  ingest_requests_promql = "run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",service_name=\"${local.ingest_function}\""
  ingest_refused_promql  = "sum(increase(${local.ingest_requests_promql},response_code_class!=\"2xx\"}[${var.alert_thresholds.ingest_refused_minutes}m]))"
  ingest_refusal_query = join(" ", [
    "(${local.ingest_refused_promql} / sum(increase(${local.ingest_requests_promql}}[${var.alert_thresholds.ingest_refused_minutes}m])) > ${var.alert_thresholds.ingest_refused_ratio})",
    "and (${local.ingest_refused_promql} >= ${var.alert_thresholds.ingest_refused_min_requests})",
  ])
}
