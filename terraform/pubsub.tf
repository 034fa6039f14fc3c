# Topics and subscriptions, built from the routing table (routing.tf): one push subscription per
# route, each with its filter, OIDC, retries and a dead-letter topic; ops/local/topology.py builds
# the same shape on the emulator.

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; CMEK needs a KMS key and Pub/Sub service-agent grants this module leaves to the organisation.
  project = var.project_id
  name    = local.events_topic
  # Kept on the topic too, so a subscription created later can still seek back into the window.
  message_retention_duration = var.delivery.message_retention
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "quarantine" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; CMEK needs a KMS key and Pub/Sub service-agent grants this module leaves to the organisation.
  project                    = var.project_id
  name                       = local.quarantine_topic
  message_retention_duration = var.delivery.message_retention
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; CMEK needs a KMS key and Pub/Sub service-agent grants this module leaves to the organisation.
  for_each = local.subscribed_routes

  project                    = var.project_id
  name                       = local.dead_letter_topics[each.key]
  message_retention_duration = var.delivery.message_retention
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_subscription" "push" {
  # Routes with event types only: an empty filter would deliver every event (routing.tf).
  for_each = local.subscribed_routes

  project = var.project_id
  name    = local.subscriptions[each.key]
  topic   = google_pubsub_topic.events.id
  filter  = local.route_filters[each.key]

  # Above the handler's request timeout, so a slow handler is not sent the message again
  # while it is still working on it.
  ack_deadline_seconds = var.handlers.timeout_seconds + 30

  # Acknowledged messages stay for `replay --since` (Pub/Sub seek) after a bad deploy.
  retain_acked_messages      = true
  message_retention_duration = var.delivery.message_retention

  expiration_policy {
    ttl = "" # never expire, however quiet the route
  }

  push_config {
    push_endpoint = "${local.run_urls[each.value.service]}/push/${each.key}"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.run_urls[each.value.service]
    }
  }

  retry_policy {
    minimum_backoff = var.delivery.minimum_backoff
    maximum_backoff = var.delivery.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.delivery.max_delivery_attempts
  }

  # Pushes start as soon as the subscription exists: the services and their invoker grants
  # first, so the first events do not burn delivery attempts on a missing endpoint.
  depends_on = [
    google_pubsub_topic_iam_member.agent_publishes_dead_letters,
    google_cloud_run_v2_service_iam_member.invoker,
  ]

  lifecycle {
    # Pub/Sub refuses a longer filter; only the hooks route's can grow (var.hook_events).
    precondition {
      condition     = length(local.route_filters[each.key]) <= local.max_filter_bytes
      error_message = "The ${each.key} route's subscription filter is ${length(local.route_filters[each.key])} bytes, over Pub/Sub's ${local.max_filter_bytes}: use fewer hook_events, or prefixes (entity.*) in place of several types."
    }
  }
}

# Pull subscriptions for people: inspect and replay dead letters (`python -m ops dlq`), and
# watch what was quarantined.
resource "google_pubsub_subscription" "dead_letter_watch" {
  for_each = local.subscribed_routes

  project                    = var.project_id
  name                       = local.dead_letter_watch_subscriptions[each.key]
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = var.delivery.message_retention

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "quarantine_watch" {
  project                    = var.project_id
  name                       = local.quarantine_watch_subscription
  topic                      = google_pubsub_topic.quarantine.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.delivery.message_retention

  expiration_policy {
    ttl = ""
  }
}
