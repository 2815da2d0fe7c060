"""Listening sockets asked of the kernel by netlink: the same inodes as its tables list."""

from __future__ import annotations

import contextlib
import os
import socket
import sys

import pytest

from mcp_backgroundr.platform import linux, sockdiag

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink sock_diag is Linux's")


def _inode(sock: socket.socket) -> str:
    return os.readlink(f"/proc/self/fd/{sock.fileno()}").removeprefix("socket:[").removesuffix("]")


def test_netlink_lists_the_listening_sockets_the_kernel_tables_list() -> None:
    with contextlib.ExitStack() as stack:
        ipv4 = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        ipv6 = stack.enter_context(socket.create_server(("::1", 0), family=socket.AF_INET6))
        connected = stack.enter_context(socket.create_connection(ipv4.getsockname()))
        accepted = stack.enter_context(ipv4.accept()[0])
        # Other programs on the machine open and close sockets too: the two reads agree at once, or
        # on one of the next tries.
        for _ in range(5):
            asked = sockdiag.listening_inodes()
            if asked == linux._listening_inodes_read():
                break
        assert asked == linux._listening_inodes_read()
        assert {_inode(ipv4), _inode(ipv6)} <= asked
        assert not {_inode(connected), _inode(accepted)} & asked  # connections are not listening
        assert linux._listening_inodes() == asked
