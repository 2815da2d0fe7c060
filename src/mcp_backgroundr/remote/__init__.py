"""Remote hosts over SSH: another place a task runs.

:class:`RemotePlace` (``place.py``) implements the core's ``Place`` seam for every task that
has a ``host``; whoever serves hands it to the supervisor. It calls :class:`RemoteTasks`
(``tasks.py``), which reaches the host through the user's own OpenSSH client
(``ssh.py``) and the agent sent over the connection (``bundle.py``; the remote side is
``agent.py``, ``agent_procs.py`` and ``agent_wait.py``, standard library only);
``watches.py`` keeps one watch per host open, so an exit there is learnt as it happens.
"""

from .place import RemotePlace
from .ssh import Destination, parse_destination
from .tasks import RemoteTasks
from .watches import ExitWatches

__all__ = ["Destination", "ExitWatches", "RemotePlace", "RemoteTasks", "parse_destination"]
