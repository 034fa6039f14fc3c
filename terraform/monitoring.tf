# The log-based metrics of metrics.tf; a test runs each code path and checks its filter matches
# the line it writes, and extracts the labels it names.

resource "google_logging_metric" "events" {
  for_each = local.log_metrics

  project     = var.project_id
  name        = local.log_metric_name[each.key]
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    dynamic "labels" {
      for_each = each.value.labels
      content {
        key         = labels.key
        value_type  = "STRING"
        description = local.log_metric_label_descriptions[labels.key]
      }
    }
  }

  label_extractors = local.log_metric_label_extractors[each.key]

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project_id
  display_name = "${var.name_prefix} alerts: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }

  depends_on = [google_project_service.apis]
}

# --- channels beyond e-mail (var.alert_channels) -------------------------------------------
# Each secret is read from Secret Manager with an ephemeral resource (never stored in the plan
# or the state) and sent in a write-only label (sensitive_labels.*_wo), which the provider
# sends to the API when the channel is created or its *_wo_version changes and never stores.

locals {
  # The channels' secrets, by channel: which secret and version to read.
  channel_secrets = merge(
    var.alert_channels.slack == null ? {} : {
      slack = { secret = var.alert_channels.slack.auth_token_secret, version = var.alert_channels.slack.auth_token_version }
    },
    var.alert_channels.pagerduty == null ? {} : {
      pagerduty = { secret = var.alert_channels.pagerduty.service_key_secret, version = var.alert_channels.pagerduty.service_key_version }
    },
    try(var.alert_channels.webhook.password_secret, null) == null ? {} : {
      webhook = { secret = var.alert_channels.webhook.password_secret, version = var.alert_channels.webhook.password_version }
    },
  )
  # Basic auth when a username is given; token auth (the token in the URL) otherwise.
  webhook_basic_auth = try(var.alert_channels.webhook.username, null) != null
}

ephemeral "google_secret_manager_secret_version" "channel" {
  for_each = local.channel_secrets

  project = var.project_id
  secret  = each.value.secret
  version = each.value.version
}

# Cloud Monitoring's "slack" channel type: label channel_name, sensitive label auth_token.
resource "google_monitoring_notification_channel" "slack" {
  count = var.alert_channels.slack == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.name_prefix} alerts: Slack ${var.alert_channels.slack.channel_name}"
  type         = "slack"
  labels = {
    channel_name = var.alert_channels.slack.channel_name
  }
  sensitive_labels {
    auth_token_wo         = ephemeral.google_secret_manager_secret_version.channel["slack"].secret_data
    auth_token_wo_version = var.alert_channels.slack.auth_token_version
  }

  depends_on = [google_project_service.apis]
}

# "pagerduty": sensitive label service_key (the PagerDuty service's integration key).
resource "google_monitoring_notification_channel" "pagerduty" {
  count = var.alert_channels.pagerduty == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.name_prefix} alerts: PagerDuty"
  type         = "pagerduty"
  sensitive_labels {
    service_key_wo         = ephemeral.google_secret_manager_secret_version.channel["pagerduty"].secret_data
    service_key_wo_version = var.alert_channels.pagerduty.service_key_version
  }

  depends_on = [google_project_service.apis]
}

# "webhook_basicauth" (labels url, username; sensitive label password) or "webhook_tokenauth"
# (label url, which carries the token: no sensitive label exists for it).
resource "google_monitoring_notification_channel" "webhook" {
  count = var.alert_channels.webhook == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.name_prefix} alerts: webhook"
  type         = local.webhook_basic_auth ? "webhook_basicauth" : "webhook_tokenauth"
  labels = local.webhook_basic_auth ? {
    url      = var.alert_channels.webhook.url
    username = var.alert_channels.webhook.username
    } : {
    url = var.alert_channels.webhook.url
  }

  dynamic "sensitive_labels" {
    for_each = local.webhook_basic_auth ? ["webhook"] : []
    content {
      password_wo         = ephemeral.google_secret_manager_secret_version.channel["webhook"].secret_data
      password_wo_version = var.alert_channels.webhook.password_version
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  # Every alert policy notifies every configured channel.
  notification_channels = concat(
    [for channel in google_monitoring_notification_channel.email : channel.id],
    google_monitoring_notification_channel.slack[*].id,
    google_monitoring_notification_channel.pagerduty[*].id,
    google_monitoring_notification_channel.webhook[*].id,
  )

  # Cloud Monitoring takes at most six conditions in a policy; the per-route policies have one
  # per route, so the incident names the route.
  max_policy_conditions = 6

  # Alerts on the log-based metrics: threshold over a five-minute sum. `runbook` is the anchor of
  # the policy's entry under the README's Runbook, as GitHub derives it from the heading.
  log_alerts = {
    sync_failed = {
      severity  = "ERROR"
      title     = "Supaglue sync failed"
      threshold = 0
      summary   = "A sync reported ERROR. The log line carries customer_id, connection_id, provider_name, object and error_message."
      runbook   = "a-sync-alert-fires"
    }
    reconnect_required = {
      severity  = "WARNING"
      title     = "Supaglue sync paused: customer must reconnect"
      threshold = 0
      summary   = "Supaglue paused a sync because the CRM authorisation was lost. Ask the customer to reconnect; the log line names customer and provider."
      runbook   = "a-sync-alert-fires"
    }
    signature_rejected = {
      severity  = "WARNING"
      title     = "Webhook signature rejections spiking"
      threshold = var.alert_thresholds.signature_rejections_per_5m
      summary   = "Many webhooks failed signature checks: a rotated secret not yet added to the function, clock skew, or someone probing the endpoint."
      runbook   = "signature-rejections-spike"
    }
    backfill_failed = {
      severity  = "ERROR"
      title     = "Backfill failed"
      threshold = 0
      summary   = "A backfill stopped on a permanent error; `python -m ops status` shows it with its last error."
      runbook   = "a-backfill-failed"
    }
    sync_failed_repeatedly = {
      severity  = "CRITICAL"
      title     = "Supaglue sync failing repeatedly"
      threshold = 0
      summary   = "The same customer's sync of one object failed several times in a row (alert_thresholds.repeated_sync_failures): the integration is broken, not flaky. The log line carries customer_id, provider_name, connection_id, object and consecutive_failures."
      runbook   = "a-sync-alert-fires"
    }
    events_reconciled = {
      severity  = "WARNING"
      title     = "Events recovered by reconciliation: webhooks were lost upstream"
      threshold = 0
      summary   = "The reconciler found runs or connection changes in Supaglue's API that no webhook reported, and published them (they took effect once). Find out why webhooks were lost."
      runbook   = "events-were-recovered-by-reconciliation"
    }
  }
}

resource "google_monitoring_alert_policy" "log_events" {
  for_each = local.log_alerts

  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.title}"
  severity              = each.value.severity
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = each.value.title
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type[each.key]}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "${each.value.summary}\n\n[Runbook](${var.runbook_url}#${each.value.runbook})"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "86400s"
  }

  depends_on = [google_logging_metric.events]
}

# Ingest answering 5xx: Pub/Sub unavailable (publish_failed), or anything else the platform saw.
resource "google_monitoring_alert_policy" "ingest_5xx" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: ingest answering 5xx"
  severity              = "CRITICAL"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "ingest 5xx responses"
    condition_threshold {
      # A gen2 function serves through the Cloud Run service of the same name.
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.ingest_function}\" AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_thresholds.ingest_5xx_per_5m
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "ingest could not store webhooks"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type["publish_failed"]}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "The ingest function answered 5xx: Svix retries these, so nothing is lost yet, but Pub/Sub may be unavailable or the function failing.\n\n[Runbook](${var.runbook_url}#ingest-answers-5xx)"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "86400s"
  }

  depends_on = [google_logging_metric.events]
}

# Ingest refusing most requests for a sustained time: after a deploy with a wrong signing
# secret every webhook gets 401, Svix retries each for about 28 hours and disables the endpoint
# after 5 days of failures. A ratio with a minimum count is one PromQL expression
# (local.ingest_refusal_query, metrics.tf). PromQL, not MQL (condition_monitoring_query_language):
# Google deprecated MQL (no longer offered in the console since July 2025) and recommends PromQL,
# which the provider supports as condition_prometheus_query_language. A condition_threshold
# ratio (denominator_filter) could not carry the minimum count in the same condition.
resource "google_monitoring_alert_policy" "ingest_refusals" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: ingest refusing most webhooks"
  severity              = "CRITICAL"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "most ingest requests answered other than 2xx"
    condition_prometheus_query_language {
      query               = local.ingest_refusal_query
      duration            = "${var.alert_thresholds.ingest_refused_minutes * 60}s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    content   = "For ${var.alert_thresholds.ingest_refused_minutes} minutes, more than ${var.alert_thresholds.ingest_refused_ratio * 100}% of the requests to the ingest function were answered other than 2xx. Svix retries each webhook for about 28 hours and disables the endpoint after 5 days of failures; until it is fixed, webhooks are not stored.\n\n[Runbook](${var.runbook_url}#ingest-refuses-most-webhooks)"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "86400s"
  }
}

# Push backlog: a route's push subscription holds an event older than a handler should ever
# leave one, retries and back-off included: the handler keeps failing or is not reached, long
# before the event exhausts its delivery attempts and is dead-lettered. One condition per route.
resource "google_monitoring_alert_policy" "push_backlog" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: push subscription falling behind"
  severity              = "ERROR"
  combiner              = "OR"
  notification_channels = local.notification_channels

  dynamic "conditions" {
    for_each = local.subscribed_routes
    content {
      display_name = "oldest event waiting for ${conditions.key}"
      condition_threshold {
        filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.push[conditions.key].name}\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.alert_thresholds.backlog_max_age_seconds
        duration        = "0s"
        aggregations {
          alignment_period   = "60s"
          per_series_aligner = "ALIGN_MAX"
        }
        trigger {
          count = 1
        }
      }
    }
  }

  documentation {
    content   = "A route's push subscription holds an event older than ${var.alert_thresholds.backlog_max_age_seconds} s: its handler keeps failing or cannot be reached, and the event is dead-lettered after delivery.max_delivery_attempts.\n\n[Runbook](${var.runbook_url}#a-push-subscription-falls-behind)"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "86400s"
  }

  lifecycle {
    precondition {
      condition     = length(local.subscribed_routes) <= local.max_policy_conditions
      error_message = "The push backlog policy has a condition per route, and Cloud Monitoring takes at most ${local.max_policy_conditions}: split it before adding a route."
    }
  }
}

# Dead-letter backlog: a message that exhausted its retries (or a handler set aside) waits on
# a dead-letter subscription. One condition per route, so the alert names the handler.
resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: dead-letter backlog"
  severity              = "ERROR"
  combiner              = "OR"
  notification_channels = local.notification_channels

  dynamic "conditions" {
    for_each = local.subscribed_routes
    content {
      display_name = "dead letters waiting for ${conditions.key}"
      condition_threshold {
        filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter_watch[conditions.key].name}\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.alert_thresholds.dead_letter_max_age_seconds
        duration        = "0s"
        aggregations {
          alignment_period   = "60s"
          per_series_aligner = "ALIGN_MAX"
        }
        trigger {
          count = 1
        }
      }
    }
  }

  documentation {
    content   = "Events were set aside on a dead-letter subscription: `python -m ops dlq list`, fix, then `python -m ops dlq replay`.\n\n[Runbook](${var.runbook_url}#the-dead-letter-backlog-grows)"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "86400s"
  }

  lifecycle {
    precondition {
      condition     = length(local.subscribed_routes) <= local.max_policy_conditions
      error_message = "The dead-letter policy has a condition per route, and Cloud Monitoring takes at most ${local.max_policy_conditions}: split it before adding a route."
    }
  }
}
