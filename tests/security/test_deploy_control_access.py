"""Only the coordinator controls the federation (loopback deployment on 127.0.0.1).

An outsider, or a partner, holding ``ca.crt`` reaches only the public Fleet gateway: it
cannot register a node key, start a run, list or stop runs, or call the Runtime API. The
coordinator, on the SuperLink's own port, can.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fedprofile.deploy.credentials import create_credentials
from fedprofile.deploy.fleet_gateway import FLEET_ROUTES
from fedprofile.deploy.loopback import PUBLIC, LoopbackFederation

pytestmark = pytest.mark.slow
DENIED = "Only the Fleet API (SuperNode traffic) is served at this address."


def _refused(done) -> bool:
    return done.returncode != 0 and DENIED in done.stdout + done.stderr


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    fed = LoopbackFederation(root=root, partners=[{"partner-name": "p1"}])
    fed.start_superlink()
    try:
        fed.register_partners()
        yield fed
    finally:
        fed.stop()
    assert fed.alive() == []


def _registered_keys(fed: LoopbackFederation) -> int:
    done = fed.cli("supernode", "list", "loopback")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.count("registered") + done.stdout.count("online")


def test_outsider_cannot_register_a_node(federation, tmp_path: Path) -> None:
    stranger = create_credentials(tmp_path, partners=1).partner_keys[0][1]
    before = _registered_keys(federation)
    assert _refused(federation.cli("supernode", "register", str(stranger), PUBLIC))
    assert _registered_keys(federation) == before == 1


def test_outsider_cannot_start_or_list_runs(federation) -> None:
    app = Path(__file__).resolve().parents[2]
    assert _refused(federation.cli("run", str(app), PUBLIC, timeout=120))
    assert _refused(federation.cli("ls", PUBLIC))
    listing = federation.cli("ls", "loopback")  # the coordinator sees no run was started
    assert listing.returncode == 0 and "running" not in listing.stdout


@pytest.mark.parametrize("path", ["/v1/control/start-run", "/v1/control/register-node",
                                  "/v1/control/list-runs", "/v1/runtime/acquire-task",
                                  "/v1/runtime/pull-messages", "/v1/fleet/../control/list-runs",
                                  "/v1/fleet/nosuch", "/docs"])
def test_gateway_forwards_nothing_but_fleet_routes(federation, path: str) -> None:
    ca = str(federation.credentials.ca_cert)
    with httpx.Client(verify=ca) as client:
        reply = client.post(f"https://127.0.0.1:{federation.port}{path}", content=b"")
        assert reply.status_code == 403, (path, reply.status_code)
        fleet = client.post(f"https://127.0.0.1:{federation.port}/v1/fleet/get-run",
                            content=b"")
        assert fleet.status_code not in (403, 404)  # reaches the SuperLink's Fleet API


def test_gateway_route_list_matches_flowers_fleet_router() -> None:
    from flwr.superlink.routers.fleet.router import router

    assert {r.path.rsplit("/", 1)[1] for r in router.routes} == FLEET_ROUTES


def test_coordinator_controls_the_federation(federation) -> None:
    assert _registered_keys(federation) == 1
    assert federation.cli("ls", "loopback").returncode == 0
