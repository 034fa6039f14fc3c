"""The ingest Cloud Function: verified Supaglue webhooks into Pub/Sub."""
