"""Unit tests run on a fresh machine: no system binaries (MariaDB is for the end-to-end tests)."""

from __future__ import annotations

import pytest

from flops_operator.platforms.local import mariadb


@pytest.fixture(autouse=True)
def no_system_binaries(tmp_path_factory, monkeypatch):
    """Whatever this machine has installed, unit tests see no mariadbd."""
    monkeypatch.setattr(mariadb, "_SEARCH_PATH", str(tmp_path_factory.mktemp("no-system-binaries")))
