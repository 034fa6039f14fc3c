"""Cloud Run services that receive Pub/Sub push deliveries and Cloud Tasks."""
