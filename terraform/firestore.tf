resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"
  # The ledger's claims are read-then-written in transactions (handlers/ledger.py).
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

# The ledger remembers handled events until expires_at (LEDGER_RETENTION_DAYS ahead);
# Firestore deletes them after that, typically within a day.
resource "google_firestore_field" "ledger_ttl" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "processed_events"
  field      = "expires_at"

  ttl_config {}
  # A timestamp nobody queries by: no single-field indexes to keep up to date.
  index_config {}
}

# connection.deleted cancels the connection's unfinished backfills (handlers/backfill_store.py,
# unfinished_for): customer_id == X and provider_name == Y and state in [...].
resource "google_firestore_index" "backfills_by_connection" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "backfills"

  fields {
    field_path = "customer_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "provider_name"
    order      = "ASCENDING"
  }
  fields {
    field_path = "state"
    order      = "ASCENDING"
  }
}
