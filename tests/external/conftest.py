"""Fixtures of the external tests: the npm-installed conformance suite, Inspector and Node 22."""

from __future__ import annotations

import pytest

from .npm_tools import NpmTools, install


@pytest.fixture(scope="session")
def npm_tools() -> NpmTools:
    return install()
