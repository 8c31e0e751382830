"""Shared fixtures of the security suite: a partner on a slice of the bank preset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.io.tables import write_table


@pytest.fixture(scope="session")
def bank_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """600 bank customers in a CSV file, and the bank contract."""
    from fedprofile.presets.datasets import load_preset

    bank = load_preset("bank")
    folder = tmp_path_factory.mktemp("bank")
    return write_table(bank.frame.iloc[:600], folder / "customers.csv"), Path(bank.spec_path)


@pytest.fixture
def make_site(tmp_path: Path, bank_slice: tuple[Path, Path]) -> Callable[..., PartnerSite]:
    """A deployed partner ``acme`` with an optional policy file's text."""

    def build(policy: str | None = None) -> PartnerSite:
        policy_path = ""
        if policy is not None:
            policy_path = str(tmp_path / "policy.toml")
            Path(policy_path).write_text(policy, encoding="utf-8")
        return PartnerSite(NodeConfig(data_path=str(bank_slice[0]), spec=str(bank_slice[1]),
                                      partner_name="acme", state_dir=str(tmp_path / "state"),
                                      policy=policy_path, output_dir=str(tmp_path / "out")))

    return build
