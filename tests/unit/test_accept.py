"""A conversation message answers as server-sent events when the Accept header prefers them."""

import pytest

from quarry.api.conversations import wants_events


@pytest.mark.parametrize(
    ("accept", "events"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/event-stream", True),
        ("TEXT/EVENT-STREAM", True),
        ("text/event-stream, application/json", True),
        ("application/json;q=0.5, text/event-stream", True),
        ("text/event-stream;q=0, application/json", False),  # q=0: not acceptable at all
        ("text/event-stream;q=0.3, application/json", False),
        ("text/event-stream;q=0.3", True),
        ("text/event-stream;q=nonsense", False),
    ],
)
def test_events_when_accept_prefers_them(accept: str, events: bool) -> None:
    assert wants_events(accept) is events
