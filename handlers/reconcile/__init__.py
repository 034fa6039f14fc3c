"""The reconciler: finds what Supaglue did that the pipeline never heard of, and publishes it.

A webhook can be lost before it reaches the ingest function (Svix gave up, the endpoint was
disabled, a deploy answered 401 for hours). Supaglue's management API keeps the truth: each
pass (handlers/reconcile/passes.py) reads it (api.py), compares it with the ledger and the
connection registry, and publishes what is missing as the webhook would have been
(synthetic.py), with `origin=reconciled` and a webhook id derived from what it stands for. Its
progress, a watermark with an overlap and where a cut-short pass stopped, is kept in
Firestore (store.py). app.py is the thin Flask app Cloud Scheduler calls.
"""
