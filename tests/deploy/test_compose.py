"""The docker-compose topology, checked without a Docker engine.

Every service's command may only use flags the installed CLIs accept, every mounted host
path must exist in the repository or be created by the documented set-up, every version must
match the project's pins, only the coordinator reaches the SuperLink, each partner's runtime
API is on a network of its own, and every partner runs ClientApps through its launcher with
an allow-list approving the app in this repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import flwr
import pytest
import yaml

from fedprofile.deploy import compose_setup
from fedprofile.deploy.app_guard import read_allow_list
from fedprofile.deploy.approval import app_digest
from fedprofile.deploy.loopback import snapshot_app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
BINARY = {"flwr/superlink": "flower-superlink", "fedprofile-app": "flower-superexec"}
MODULE_SERVICES = [n for n, s in SERVICES.items() if s.get("entrypoint", [""])[0] == "python"]
PARTNERS = (1, 2, 3)


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
    app = snapshot_app(ROOT, out / "app")  # frozen: the tree may change during the tests
    assert compose_setup.main(out, app=app) == 0
    return out


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "entrypoint" not in s
                                  and s["image"].split(":")[0] in BINARY])
def test_service_commands_use_only_flags_the_installed_clis_accept(name: str) -> None:
    service = SERVICES[name]
    binary = BINARY[service["image"].split(":")[0]]
    accepted = set(re.findall(r"--[a-z][a-z0-9-]*", _help(binary)))
    used = {arg.split("=", 1)[0] for arg in service["command"] if arg.startswith("--")}
    assert used, name
    assert used <= accepted, f"{name}: {sorted(used - accepted)} not accepted by {binary}"


@pytest.mark.parametrize("name", MODULE_SERVICES)
def test_fedprofile_module_services_use_only_flags_their_module_accepts(name: str) -> None:
    service = SERVICES[name]
    module = service["entrypoint"][-1]
    assert module in {"fedprofile.deploy.partner_exec", "fedprofile.deploy.fleet_gateway",
                      "fedprofile.deploy.supernode"}
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    accepted = set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))
    used = {arg.split("=", 1)[0] for arg in service["command"] if arg.startswith("--")}
    assert used and used <= accepted, f"{name}: {sorted(used - accepted)}"


def _networks(name: str) -> set[str]:
    return set(SERVICES[name].get("networks", []))


def test_only_the_coordinator_reaches_the_superlink() -> None:
    # the SuperLink's port is published on the host's loopback only
    assert SERVICES["superlink"]["ports"] == ["127.0.0.1:9093:9091"]
    published = {n for n, s in SERVICES.items() if s.get("ports")}
    assert published == {"superlink", "fleet-gateway"}
    assert SERVICES["fleet-gateway"]["ports"] == ["9092:9092"]
    # no partner container shares a network with the SuperLink
    for i in PARTNERS:
        for name in (f"supernode-{i}", f"superexec-clientapp-{i}"):
            assert not _networks(name) & _networks("superlink"), name
        node = SERVICES[f"supernode-{i}"]["command"]
        assert "--superlink=fleet-gateway:9092" in node
    gateway = SERVICES["fleet-gateway"]["command"]
    assert "--upstream=superlink:9091" in gateway


def test_each_partner_runtime_api_is_on_a_network_of_its_own() -> None:
    for i in PARTNERS:
        private = f"partner-{i}"
        assert COMPOSE["networks"][private] == {"internal": True}
        on_it = {n for n in SERVICES if private in _networks(n)}
        assert on_it == {f"supernode-{i}", f"superexec-clientapp-{i}"}
        assert _networks(f"superexec-clientapp-{i}") - {f"partner-{i}-data"} == {private}
        uplink = _networks(f"supernode-{i}") - {private}
        assert len(uplink) == 1
        (net,) = uplink
        assert {n for n in SERVICES if net in _networks(n)} == {f"supernode-{i}",
                                                                 "fleet-gateway"}
    # every service is on a declared network, none on docker's shared default network
    for name, service in SERVICES.items():
        assert service.get("networks"), name
        assert set(service["networks"]) <= set(COMPOSE["networks"]), name


def test_who_reaches_each_runtime_api_is_exactly_what_the_notes_say() -> None:
    # every container sharing a network with a partner's SuperNode can open its runtime port
    header = (ROOT / "docker-compose.yml").read_text(encoding="utf-8").split("x-app-image")[0]
    for i in PARTNERS:
        reach = {n for n in SERVICES if n != f"supernode-{i}"
                 and _networks(n) & _networks(f"supernode-{i}")}
        assert reach == {f"superexec-clientapp-{i}", "fleet-gateway"}
        # the gateway, which reaches it, holds no partner secret
        assert not any("superexec.secret" in v or "keys" in v
                       for v in SERVICES["fleet-gateway"]["volumes"])
    assert "no other container reaches its runtime API" not in header
    assert "two containers reach it: the partner's launcher" in header
    assert "and the coordinator's fleet-gateway" in header


def test_partners_run_client_apps_only_through_their_launcher(set_up: Path) -> None:
    digest = app_digest(set_up / "app")
    for i in PARTNERS:
        node = SERVICES[f"supernode-{i}"]["command"]
        assert "--isolation=process" in node  # the SuperNode itself never starts an app
        launcher = SERVICES[f"superexec-clientapp-{i}"]
        assert launcher["entrypoint"] == ["python", "-P", "-m", "fedprofile.deploy.partner_exec"]
        args = dict(a.split("=", 1) for a in launcher["command"] if "=" in a)
        assert args["--runtime-api-address"] == f"supernode-{i}:9094"
        mounts = {v.split(":")[1]: v for v in launcher["volumes"]}
        allow = mounts[args["--allow-list"]]
        assert allow.endswith(":ro")  # the app cannot edit what its partner approved
        host = set_up / Path(allow.split(":")[0]).relative_to("deploy")
        assert read_allow_list(host) == {digest}  # the set-up approves this repository's app
        secret = mounts[args["--superexec-auth-secret-file"]].split(":")[0]
        node_secret = next(v for v in SERVICES[f"supernode-{i}"]["volumes"]
                           if v.split(":")[1] == "/app/secrets/superexec.secret")
        assert node_secret.split(":")[0] == secret
        assert "--superexec-auth-secret-file=/app/secrets/superexec.secret" in node


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
    for i in PARTNERS:
        config = next(a for a in SERVICES[f"supernode-{i}"]["command"]
                      if a.startswith("--node-config="))
        paths = re.findall(r"'(/partner/[^']+)'", config)
        assert len(paths) == 5
        for path in paths:
            assert (set_up / "partners" / f"partner-{i}" / Path(path).relative_to("/partner")
                    ).exists(), path
        mounts = SERVICES[f"superexec-clientapp-{i}"]["volumes"]
        assert mounts[0] == f"./deploy/partners/partner-{i}:/partner"
        assert all(m.endswith(":ro") for m in mounts[1:])


def test_each_partner_trusts_every_partners_secagg_key_under_its_compose_name(set_up: Path
                                                                            ) -> None:
    from fedprofile.client.secure import public_key_hex, trusted_keys_path

    names = {f"partner-{i}" for i in PARTNERS}
    for i in PARTNERS:
        config = next(a for a in SERVICES[f"supernode-{i}"]["command"]
                      if a.startswith("--node-config="))
        assert f"partner-name='partner-{i}'" in config
        state = set_up / "partners" / f"partner-{i}" / "state"
        trusted = json.loads(trusted_keys_path(state).read_text())
        assert set(trusted) == names
        assert trusted[f"partner-{i}"] == public_key_hex(state)
        assert (state / "secagg" / "signing.key").stat().st_mode & 0o077 == 0


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
    for i in PARTNERS:
        node = SERVICES[f"supernode-{i}"]["command"]
        assert any(a.startswith("--root-certificates=") for a in node)
        assert any(a.startswith("--auth-supernode-private-key=") for a in node)


def test_partner_database_is_optional_private_and_read_through_a_read_only_role(
        set_up: Path) -> None:
    # Prepare
    db = SERVICES["partner-3-db"]
    env = db["environment"]
    secrets = COMPOSE["secrets"]

    # Assert: only under its profile, on an internal network shared with partner 3's launcher
    # alone (not with its SuperNode's runtime API), no published port
    assert db["profiles"] == ["partner-db"] and db["image"] == "postgres:15"
    assert db["networks"] == ["partner-3-data"]
    assert COMPOSE["networks"]["partner-3-data"] == {"internal": True}
    assert {n for n in SERVICES if "partner-3-data" in _networks(n)} == {
        "partner-3-db", "superexec-clientapp-3"}
    assert "ports" not in db
    # passwords are secrets written by the set-up (0600), never values in the file
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/partner-db-admin"
    assert sorted(db["secrets"]) == sorted(secrets) == ["partner-db-admin", "partner-db-reader"]
    for secret in secrets.values():
        made = set_up / Path(secret["file"]).relative_to("deploy")
        assert made.is_file() and (made.stat().st_mode & 0o777) == 0o600
        assert len(made.read_text()) >= 24
    # the owner's password is where no partner container can read it: code the federation
    # runs in partner 3's launcher reaches the database, but only as the read-only role
    owner = Path(secrets["partner-db-admin"]["file"])
    mounted = [Path(v.split(":")[0]) for s in SERVICES.values() if s is not db
               for v in s.get("volumes", [])]
    assert not any(owner.is_relative_to(m) or owner == m for m in mounted)
    # the seed creates the table from the partner's rows; the role only reads
    seed = (set_up / "partners" / "partner-3" / "db" / "01-customers.sql").read_text()
    assert seed.startswith("CREATE TABLE customers (") and '"age" bigint' in seed
    reader = (ROOT / "deploy" / "partner-db" / "reader.sh").read_text()
    assert "default_transaction_read_only = on" in reader
    assert "GRANT SELECT ON customers TO fedprofile_reader" in reader
    assert not re.search(r"GRANT (ALL|INSERT|UPDATE|DELETE)", reader)
    assert "/run/secrets/partner-db-reader" in reader


def test_partner_database_url_in_the_compose_notes_has_no_password() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    urls = re.findall(r"postgresql\+psycopg://[^' ]+", text)
    assert urls and all(":" not in url.split("://")[1].split("@")[0] for url in urls)
