"""The seam to the operating system: everything the rest of the package asks of it.

``backend.current()`` is the chosen backend (``linux`` or ``portable``, see :mod:`.backend`):
exits, file events, how a log's head is dropped, sockets, containment. Beside it, what both
backends share: spawning a task in its own session (``process``), terminals (``terminal``),
shared scans (``scans``), containment by cgroup, subreaper or marker (``containment``), and
``heads``, the standard-library-only way to drop a log's head (the runner loads it too).
"""
