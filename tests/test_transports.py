"""Serving's own parts that need no client."""

from __future__ import annotations

import gc

from mcp_backgroundr.serving import transports


def test_what_starting_made_is_left_out_of_later_collections_and_collections_are_fewer() -> None:
    """A full collection walked every object the server made while starting (the SDK's modules,
    schemas and validators), 40 to 70 ms on the event loop; frozen, it walks only what came after.
    Collections at Python's default threshold (700) walked the objects of 1,000 pending requests so
    often that they took a quarter of the server's CPU (docs/benchmarks.md 22)."""
    made = len(gc.get_objects())
    threshold = gc.get_threshold()
    try:
        transports.tune_garbage_collection()
        assert gc.get_freeze_count() >= made
        assert len(gc.get_objects()) < made
        young, _, full = gc.get_threshold()
        assert (young, full) == (transports.YOUNG_COLLECTION_THRESHOLD, transports.FULL_COLLECTION_THRESHOLD)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
