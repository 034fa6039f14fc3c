"""The hooks route: the events the `@hooks.on` functions want, each run once per event.

The route receives the deployment's hook events (Terraform's `hook_events`;
locally, the hooks' own), and nothing else is delivered to it. Each matching
hook runs in its own step of the delivery (HandlerContext.once): one that asks
for a retry, or fails for good, does not make the others run again, and they
all run even when one of them fails.
"""

from __future__ import annotations

import functools

from handlers.context import HandlerContext
from handlers.errors import Retry
from handlers.hooks import HookContext, RawEvent
from shared.contract import Attr
from shared.errors import PermanentError, PipelineError, RetryableError
from shared.events import SupaglueEvent, WebhookEvent


def handle(event: WebhookEvent, context: HandlerContext) -> None:
    attributes = context.message.attributes
    if isinstance(event, SupaglueEvent):
        payload: WebhookEvent | RawEvent = event
        provider, object_name = event.provider_name, event.object_name_or_none
    else:
        # A type this code has no model for: the hook gets what arrived, untouched.
        payload = RawEvent(event.webhook_event_type, attributes, context.message.data)
        provider = attributes.get(Attr.PROVIDER_NAME, "")
        object_name = attributes.get(Attr.OBJECT)
    hook_context = HookContext(
        webhook_id=context.webhook_id,
        webhook_timestamp=context.webhook_timestamp,
        attributes=attributes,
        log=context.log,
    )
    failed: list[tuple[str, PipelineError]] = []
    for hook in context.hooks.on_hooks_for(
        event.webhook_event_type, provider=provider, object_name=object_name
    ):
        try:
            ran = context.once(f"on:{hook.name}", functools.partial(hook.fn, payload, hook_context))
        except (RetryableError, PermanentError) as exc:
            failed.append((hook.name, exc))
            continue
        if ran:
            context.log("INFO", "on_hook_done", f"{hook.name} ran", hook=hook.name)
    retry = [name for name, exc in failed if isinstance(exc, RetryableError)]
    if retry:
        # The failed hooks run again on the redelivery; the others are done.
        raise Retry(f"hooks asked for a retry: {', '.join(retry)}; {failed[0][1]}")
    if failed:
        names = ", ".join(name for name, _ in failed)
        raise PermanentError(f"hooks failed for good: {names}; {failed[0][1]}")
