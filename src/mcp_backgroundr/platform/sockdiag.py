"""The inodes of the listening TCP sockets, asked of the kernel through netlink's sock_diag.

Reading ``/proc/net/tcp`` and ``tcp6`` walks the kernel's whole table of connections, sized by
the machine's memory rather than by what it holds: about 1.5 ms of system time per file here with
three sockets open. A sock_diag dump asking for listening sockets only walks the listening table
(0.06 ms for both families, docs/benchmarks.md 13), which is what ``ss -l`` does. Linux only;
the caller falls back to the files when netlink is refused (an old kernel, a sandbox).
"""

from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")
"""nlmsghdr: length, type, flags, sequence number, port id."""
_REQUEST = struct.Struct("=BBBBI48x")
"""inet_diag_req_v2: family, protocol, extensions, padding, states, then a zeroed inet_diag_sockid
(no port, address or cookie to match: every socket in the asked states)."""
_INODE_AT = _HEADER.size + 68
"""Where a reply's inet_diag_msg holds the socket's inode: after family, state, timer and
retransmits (4 bytes), the socket id (48), expires, rqueue, wqueue and uid (16)."""
_ANSWER_SECONDS = 1.0
"""How long the kernel gets to answer a dump (it answers at once; a bound all the same)."""


def _request(family: int) -> bytes:
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body


def _inodes_of(family: int, found: set[str]) -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(_ANSWER_SECONDS)
        diag.send(_request(family))
        while True:
            data = diag.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, *_ = _HEADER.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR or length < _HEADER.size:
                    raise OSError(f"sock_diag refused the dump of address family {family}")
                if kind == SOCK_DIAG_BY_FAMILY and offset + _INODE_AT + 4 <= len(data):
                    found.add(str(struct.unpack_from("=I", data, offset + _INODE_AT)[0]))
                offset += (length + 3) & ~3
            if not data:
                raise OSError("sock_diag closed before the end of its dump")


def listening_inodes() -> frozenset[str]:
    """The inodes (as ``/proc/net/tcp`` writes them) of this network namespace's listening TCP
    sockets, IPv4 and IPv6. Blocking; raises ``OSError`` when netlink is not available."""
    found: set[str] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        _inodes_of(family, found)
    return frozenset(found)
