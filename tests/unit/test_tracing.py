"""The trace context each hop passes on: W3C `traceparent` in, a span of its own out."""

from __future__ import annotations

from handlers.app import continued_trace
from shared.contract import Attr, retraced
from shared.log import TraceContext

PARENT = f"00-{'ab' * 16}-{'cd' * 8}-01"


def test_a_traceparent_round_trips_and_a_child_keeps_the_trace_with_a_new_span() -> None:
    parent = TraceContext.from_traceparent(PARENT)
    assert parent == TraceContext("ab" * 16, "cd" * 8, sampled=True)
    assert parent.traceparent == PARENT
    child = parent.child()
    assert (child.trace_id, child.sampled) == (parent.trace_id, True)
    assert child.span_id is not None and len(child.span_id) == 16
    assert child.span_id != parent.span_id
    assert child.traceparent == f"00-{'ab' * 16}-{child.span_id}-01"


def test_invalid_traceparents_are_no_trace() -> None:
    for value in (None, "", "00-abc-def-01", f"00-{'0' * 32}-{'cd' * 8}-01", "junk"):
        assert TraceContext.from_traceparent(value) is None


def test_new_traces_are_distinct_and_valid() -> None:
    traces = [TraceContext.new() for _ in range(100)]
    assert len({t.trace_id for t in traces}) == 100
    for trace in traces:
        assert TraceContext.from_traceparent(trace.traceparent) == trace


def test_a_delivery_continues_its_messages_trace_or_else_the_requests() -> None:
    request = TraceContext("ef" * 16, "12" * 8)
    continued = continued_trace({Attr.TRACEPARENT.value: PARENT}, request)
    assert continued is not None
    assert continued.trace_id == "ab" * 16 and continued.span_id != "cd" * 8
    # A message published before traces were carried: the push request's own trace.
    assert continued_trace({}, request) is request
    assert continued_trace({Attr.TRACEPARENT.value: "junk"}, None) is None


def test_a_republished_message_gets_a_trace_of_its_own_linked_to_the_first() -> None:
    first = {"webhook_id": "msg_1", "event_type": "sync.complete", "traceparent": PARENT}
    again = retraced(first)
    trace = TraceContext.from_traceparent(again.pop("traceparent"))
    assert trace is not None and trace.trace_id != "ab" * 16
    assert again == {
        "webhook_id": "msg_1",
        "event_type": "sync.complete",
        "linked_webhook_id": "msg_1",
        "linked_trace_id": "ab" * 16,
    }
    assert retraced({"webhook_id": "msg_2"})["linked_webhook_id"] == "msg_2"
    assert "linked_trace_id" not in retraced({"webhook_id": "msg_2"})
