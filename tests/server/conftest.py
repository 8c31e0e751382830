"""Fixtures of the coordinator's tests."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture
def server_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity Flower gives the ServerApp's process, which new instructions carry."""
    for key, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, key, value)
