"""Serving's own parts that need no client."""

from __future__ import annotations

import gc

from mcp_backgroundr.serving import transports


def test_what_starting_made_is_left_out_of_later_collections() -> None:
    """A full collection walked every object the server made while starting (the SDK's modules,
    schemas and validators), 40 to 70 ms on the event loop; frozen, it walks only what came after."""
    made = len(gc.get_objects())
    try:
        transports.freeze_what_starting_made()
        assert gc.get_freeze_count() >= made
        assert len(gc.get_objects()) < made
    finally:
        gc.unfreeze()
