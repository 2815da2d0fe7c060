"""Tasks and their lifecycle, one job per module; the tools and HTTP call it through
:class:`~.supervisor.Supervisor`, the CLI through :class:`~.session.CoreSession`: the same units.

- ``supervisor``: the front: starts the core, takes each operation to its unit, ends all at exit
- ``session``: the front for a command without a server: the same units, nothing started or owned
- ``requests``: each tool call's arguments, checked once (with ``validation`` and ``policy``)
- ``state``: what the units share: this server's tasks, background work, the registry, notices
- ``place``: the seam for where a task runs (``Place``), chosen once per task by ``CoreState.place_of``;
  ``here``: this machine as a place (the units' local halves); other hosts: ``remote.RemotePlace``
- ``task``: one task in memory: its record, its process, its processes found, how it describes itself
- ``starting``: a checked request becomes a running task (here, or on a remote host)
- ``recording``, ``watching``, ``deadlines``: exits as they happen, terminal output, runtime limits
- ``lookup``: a task by id, this server's or a view of another server's
- ``reading``: status, grep and waits (``watch``: what a wait waits on)
- ``listing``, ``sending``: list_tasks, send_task_input (``taskinput``: pipes, terminals, FIFOs)
- ``ending``, ``shutdown``, ``forgetting``: end one task, end all at exit, remove and prune
- ``adopting``: take over what a dead server left; ``startup``: its failures, in one line
- ``watchers``: background work that fails alone; ``registry_guard``: the registry written back
"""
