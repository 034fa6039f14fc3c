# One service account per component; every grant is on the narrowest resource that works.
# The README's "Service accounts and roles" table lists the same grants, and a test compares them.

resource "google_service_account" "ingest" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-ingest"
  display_name = "Supaglue webhook ingest function"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "Builds the ingest function's and the handlers' images"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "Pub/Sub push identity: the OIDC token the handlers accept"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "tasks" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-tasks"
  display_name = "Cloud Tasks identity: the OIDC token the backfill worker accepts"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "handler" {
  for_each = local.handler_services

  project      = var.project_id
  account_id   = local.run_service_names[each.key]
  display_name = "Supaglue ${each.key} service"
  depends_on   = [google_project_service.apis]
}

# --- ingest: publish to its two topics, read the signing secret ----------------------------

# https://cloud.google.com/pubsub/docs/access-control#roles (roles/pubsub.publisher)
resource "google_pubsub_topic_iam_member" "ingest_publishes" {
  for_each = toset([google_pubsub_topic.events.name, google_pubsub_topic.quarantine.name])

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = google_service_account.ingest.member
}

# https://cloud.google.com/secret-manager/docs/access-control (roles/secretmanager.secretAccessor)
resource "google_secret_manager_secret_iam_member" "ingest_reads_secret" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.webhook_secrets.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.ingest.member
}

# --- build: Cloud Build runs as this account for the function and the handler image ---------
# Not the project's default build account: that one is often broad (Editor) or, in newer
# projects, missing. This one may write logs, read the source bucket and push to one repository.

# https://cloud.google.com/functions/docs/securing/build-custom-sa (roles/logging.logWriter)
resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

# https://cloud.google.com/storage/docs/access-control/iam-roles (roles/storage.objectViewer):
# the function's source archive and the handler image's uploaded build context.
resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# --- handlers: Firestore, dead-lettering into their own routes' topics, the hooks' secrets ---

# https://cloud.google.com/firestore/docs/security/iam (roles/datastore.user); Firestore grants
# are project-wide: a database-level grant needs an IAM condition this module does not add.
resource "google_project_iam_member" "handler_firestore" {
  for_each = local.handler_services

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.handler[each.key].member
}

# https://cloud.google.com/pubsub/docs/access-control#roles (roles/pubsub.publisher): a handler
# sets a message aside with its reason (handlers/app.py, _dead_letter) on its routes' topics only.
resource "google_pubsub_topic_iam_member" "handler_dead_letters" {
  for_each = merge([
    for service, routes in local.routes_by_service : {
      for route in routes : "${service}/${route}" => { service = service, route = route }
    }
  ]...)

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.value.route].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.handler[each.value.service].member
}

# https://cloud.google.com/secret-manager/docs/access-control (roles/secretmanager.secretAccessor):
# every handler service reads the hooks' secrets (hook_secrets) at start-up, and only those.
resource "google_secret_manager_secret_iam_member" "handler_reads_hook_secrets" {
  for_each = local.hook_secret_grants

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.handler[each.value.service].member
}

# --- backfills: enqueue chunk tasks that run as the tasks account ---------------------------

# https://cloud.google.com/tasks/docs/reference-access-control (roles/cloudtasks.enqueuer)
resource "google_cloud_tasks_queue_iam_member" "backfills_enqueue" {
  for_each = local.backfill_services

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.backfills.name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.handler[each.key].member
}

# https://cloud.google.com/tasks/docs/creating-http-target-tasks#sa (roles/iam.serviceAccountUser):
# creating a task with an OIDC token needs actAs on the token's account.
resource "google_service_account_iam_member" "backfills_act_as_tasks" {
  for_each = local.backfill_services

  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.handler[each.key].member
}

# --- who may call whom ----------------------------------------------------------------------

# https://cloud.google.com/run/docs/securing/managing-access (roles/run.invoker): Pub/Sub's push
# identity calls the routed services, Cloud Tasks' identity the worker, Cloud Scheduler's the
# reconciler, nobody else.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  # Not the hooks service while no subscription pushes to it (hook_events empty).
  for_each = setunion(local.routed_services, [local.worker_service], local.reconciler_services)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.handler[each.key].name
  role     = "roles/run.invoker"
  member   = contains(local.reconciler_services, each.key) ? google_service_account.scheduler.member : each.key == local.worker_service ? google_service_account.tasks.member : google_service_account.push.member
}

# --- the Pub/Sub service agent: dead-lettering --------------------------------------------

# https://cloud.google.com/pubsub/docs/handling-failures#grant_forwarding_permissions
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = local.subscribed_routes

  project    = var.project_id
  topic      = google_pubsub_topic.dead_letter[each.key].name
  role       = "roles/pubsub.publisher"
  member     = local.pubsub_service_agent
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription_iam_member" "agent_forwards_from_subscription" {
  for_each = local.subscribed_routes

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# --- the reconciler: publish what it recovered, read Supaglue's API key -------------------

# https://cloud.google.com/pubsub/docs/access-control#roles (roles/pubsub.publisher): recovered
# events go to the events topic, as webhooks do.
resource "google_pubsub_topic_iam_member" "reconciler_publishes" {
  for_each = local.reconciler_services

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.handler[each.key].member
}

# https://cloud.google.com/secret-manager/docs/access-control (roles/secretmanager.secretAccessor)
resource "google_secret_manager_secret_iam_member" "reconciler_reads_api_key" {
  for_each = local.reconciler_services

  project   = var.project_id
  secret_id = google_secret_manager_secret.supaglue_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.handler[each.key].member
}

# --- the Pub/Sub service agent: the archive's Cloud Storage subscription -------------------

# https://cloud.google.com/pubsub/docs/create-cloudstorage-subscription
# (roles/storage.objectCreator and roles/storage.legacyBucketReader, on the bucket only).
resource "google_storage_bucket_iam_member" "agent_writes_archive" {
  bucket     = google_storage_bucket.archive.name
  role       = "roles/storage.objectCreator"
  member     = local.pubsub_service_agent
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "agent_reads_archive_bucket" {
  bucket     = google_storage_bucket.archive.name
  role       = "roles/storage.legacyBucketReader"
  member     = local.pubsub_service_agent
  depends_on = [google_project_service.apis]
}
