// The receiver that Supaglue's tutorial "Consume notification webhooks" has its users write:
// an Express 4 endpoint that verifies the webhook with the svix package, adds the event to a
// BullMQ queue on Redis and answers 200 once the queue has it. `make bench-ingest`
// (ops/bench/ingest.py) serves it beside the ingest function, under the same load.
//
// Environment: PORT (to listen on 127.0.0.1), REDIS_PORT (a redis-server on 127.0.0.1),
// WEBHOOK_SECRET (whsec_...).
"use strict";

const express = require("express");
const { Queue } = require("bullmq");
const { Webhook } = require("svix");

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const queue = new Queue("supaglue-webhooks", {
  connection: { host: "127.0.0.1", port: Number(process.env.REDIS_PORT) },
});

const app = express();

// The raw bytes, as svix needs them: a parsed and re-serialised body would not verify.
app.post("/", express.raw({ type: "*/*", limit: "10mb" }), async (req, res) => {
  let event;
  try {
    event = webhook.verify(req.body, req.headers);
  } catch (err) {
    return res.status(400).send();
  }
  try {
    await queue.add(event.webhook_event_type, event);
  } catch (err) {
    return res.status(503).send();
  }
  return res.status(200).send();
});

const server = app.listen(Number(process.env.PORT), "127.0.0.1");

function shutdown() {
  server.close();
  queue.close().finally(() => process.exit(0));
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
