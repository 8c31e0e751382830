"""The docker-compose topology, checked without a Docker engine.

Every service's command may only use flags the installed Flower CLIs accept, every mounted
host path must exist in the repository or be created by the documented set-up, and every
version must match the project's pins.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import flwr
import pytest
import yaml

from deploy import compose_setup

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
BINARY = {"flwr/superlink": "flower-superlink", "flwr/supernode": "flower-supernode",
          "fedprofile-app": "flower-superexec"}


def _pinned_flwr() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("flwr")]
    return pin.split("==")[1]


def _help(binary: str) -> str:
    exe = Path(sys.executable).parent / binary
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def set_up(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    assert compose_setup.main(out) == 0
    return out


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "entrypoint" not in s])
def test_service_commands_use_only_flags_the_installed_clis_accept(name: str) -> None:
    service = SERVICES[name]
    binary = BINARY[service["image"].split(":")[0]]
    accepted = set(re.findall(r"--[a-z][a-z0-9-]*", _help(binary)))
    used = {arg.split("=", 1)[0] for arg in service["command"] if arg.startswith("--")}
    assert used, name
    assert used <= accepted, f"{name}: {sorted(used - accepted)} not accepted by {binary}"


def test_registration_uses_an_existing_cli_command() -> None:
    script = SERVICES["register"]["command"][0]
    assert "flwr supernode register" in script
    done = subprocess.run([str(Path(sys.executable).parent / "flwr"), "supernode", "register",
                           "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0


def test_every_mounted_path_exists_in_the_repo_or_is_made_by_the_set_up(set_up: Path) -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            relative = Path(host).relative_to(".")
            made = relative.parts[0] == "deploy" and (set_up / Path(*relative.parts[1:])).exists()
            assert (ROOT / relative).exists() or made, f"{name}: {host}"


def test_partner_node_configs_point_into_the_partner_mount(set_up: Path) -> None:
    for i in (1, 2, 3):
        config = next(a for a in SERVICES[f"supernode-{i}"]["command"]
                      if a.startswith("--node-config="))
        paths = re.findall(r"'(/partner/[^']+)'", config)
        assert len(paths) == 5
        for path in paths:
            assert (set_up / "partners" / f"partner-{i}" / Path(path).relative_to("/partner")
                    ).exists(), path
        mounts = SERVICES[f"superexec-clientapp-{i}"]["volumes"]
        assert mounts == [f"./deploy/partners/partner-{i}:/partner"]


def test_versions_match_the_pins() -> None:
    pinned = _pinned_flwr()
    assert flwr.__version__ == pinned
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if image.startswith("flwr/"):
            assert image.endswith(f":{pinned}"), name
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"ARG FLWR_VERSION={pinned}" in dockerfile
    assert SERVICES["superexec-serverapp"]["build"]["args"]["FLWR_VERSION"] == pinned
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"torch==([0-9.]+)", makefile)
    assert torch_pin and f"torch=={torch_pin[1]}" in dockerfile


def test_tls_and_authentication_are_on_for_every_partner() -> None:
    link = SERVICES["superlink"]["command"]
    assert "--enable-supernode-auth" in link and not any("--insecure" in a for a in link)
    for i in (1, 2, 3):
        node = SERVICES[f"supernode-{i}"]["command"]
        assert any(a.startswith("--root-certificates=") for a in node)
        assert any(a.startswith("--auth-supernode-private-key=") for a in node)
