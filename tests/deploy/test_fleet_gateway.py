"""The gateway forwards Fleet calls; a dropped upstream connection is a clear 502, not a 500."""

from __future__ import annotations

import warnings

import httpx

from fedprofile.deploy.fleet_gateway import KEEPALIVE_SECONDS, create_app, upstream_client

with warnings.catch_warnings():  # starlette's test client asks for httpx2 in its next release
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient


def _gateway(handler) -> TestClient:
    upstream = httpx.AsyncClient(base_url="https://superlink:9091",
                                 transport=httpx.MockTransport(handler))
    return TestClient(create_app(upstream))


def test_a_fleet_call_is_forwarded_and_others_are_denied() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=b"messages")

    with _gateway(handler) as gateway:
        assert gateway.post("/v1/fleet/pull-messages", content=b"x").content == b"messages"
        assert gateway.post("/v1/control/start-run").status_code == 403
    assert seen == ["/v1/fleet/pull-messages"]


def test_a_dropped_upstream_connection_is_a_502_naming_the_call() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with _gateway(handler) as gateway:
        reply = gateway.post("/v1/fleet/pull-messages", content=b"x")
    assert reply.status_code == 502
    assert "did not answer pull-messages (RemoteProtocolError" in reply.json()["detail"]


def test_idle_upstream_connections_expire_before_the_superlink_closes_them() -> None:
    # uvicorn, which serves the SuperLink, closes an idle connection after 5 s
    client = upstream_client("127.0.0.1:9091", verify=False)
    pool = client._transport._pool  # httpx keeps the expiry only on its connection pool
    assert pool._keepalive_expiry == KEEPALIVE_SECONDS < 5.0
