"""Where a partner's node config comes from: its own settings, never a coordinator's path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fedprofile.client.site import PartnerSite, resolve_node_config
from fedprofile.errors import ContractError

COORDINATOR_RUN_CONFIG = {"spec": "/partner/disk/chosen-by-the-coordinator.toml"}


def test_a_deployed_node_without_its_own_spec_refuses_the_run_configs() -> None:
    with pytest.raises(ContractError, match="no 'spec'") as info:
        resolve_node_config({"data-path": "customers.csv"}, run_config=COORDINATOR_RUN_CONFIG)
    assert "chosen-by-the-coordinator" not in str(info.value)


def test_a_deployed_node_refuses_before_any_site_is_built() -> None:
    with pytest.raises(ContractError, match="never takes the coordinator's"):
        PartnerSite.from_node_config({"data-path": "customers.csv"},
                                     run_config=COORDINATOR_RUN_CONFIG)


def test_a_deployed_node_keeps_its_own_spec_whatever_the_run_config_says() -> None:
    config = resolve_node_config({"data-path": "customers.csv", "spec": "own.toml"},
                                 run_config=COORDINATOR_RUN_CONFIG)
    assert config.spec == "own.toml"
    assert not config.simulation


def test_a_simulated_node_takes_the_run_configs_spec() -> None:
    config = resolve_node_config({"partition-id": 0, "num-partitions": 2,
                                  "data-path": "customers.csv"},
                                 run_config=COORDINATOR_RUN_CONFIG)
    assert config.spec == COORDINATOR_RUN_CONFIG["spec"]
    assert config.simulation


def test_a_capturing_node_without_a_spec_still_sends_its_error_reply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a deployed node without a spec that captures what it sends
    from fedprofile.client import capture

    monkeypatch.setattr(capture, "serialize_message", lambda message: b"error reply")
    node = {"data-path": "customers.csv", "capture-dir": str(tmp_path / "wire")}
    context = SimpleNamespace(node_config=node, run_config=dict(COORDINATOR_RUN_CONFIG))
    message = SimpleNamespace(metadata=SimpleNamespace(message_type="query.profile"))
    refusal = SimpleNamespace(has_error=lambda: True)

    # Execute: the mod wraps a handler that refused the config
    reply = capture.make_capture_mod()(message, context,  # type: ignore[arg-type]
                                       lambda msg, ctx: refusal)  # type: ignore[arg-type,return-value]

    # Assert: the reply goes out, and is captured
    assert reply is refusal
    assert [p.name.endswith("-query-profile-error.bin")
            for p in (tmp_path / "wire").iterdir()] == [True]
