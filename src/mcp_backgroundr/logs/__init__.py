"""Task log files: the append target, bounded reads, grep, patterns, caps.

``files`` and ``holes`` import only the standard library: the runner loads ``holes`` from its file,
and both are shipped to remote hosts (see ``remote/bundle.py``).
"""
