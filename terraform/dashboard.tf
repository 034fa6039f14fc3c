# One dashboard for the whole deployment (README, Dashboard): ingest, a row per subscribed
# route, backfills and reconciliation. The layout is dashboard.json.tftpl; every name in it
# comes from this call, from the routing table (routing.tf) and the log-based metrics
# (metrics.tf), so a route added to shared/routing.json gets its row. The tests render this
# same call with Terraform and check each metric and label it queries.
resource "google_monitoring_dashboard" "pipeline" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    display_name   = "${var.name_prefix}: Supaglue webhooks"
    ingest_service = local.ingest_function
    tasks_queue    = local.tasks_queue
    metric_type    = local.metric_type
    routes = {
      for name, _ in local.subscribed_routes : name => {
        subscription = local.subscriptions[name]
        dead_letters = local.dead_letter_watch_subscriptions[name]
      }
    }
  })

  # Charts of a log-based metric that does not exist yet stay empty until it does.
  depends_on = [google_logging_metric.events]
}
