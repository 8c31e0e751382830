"""The coordinator's public endpoint: Flower's Fleet API only, over TLS.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (``flwr run``, ``flwr
supernode register``...) and the Runtime API on one HTTP port, and its Control API has no
authentication in the open-source distribution. So the SuperLink listens on loopback (or a
private network) only, where the coordinator runs the ``flwr`` CLI, and this gateway is the
one address partners and everyone else can reach: it forwards the Fleet routes a SuperNode
calls, unchanged (SuperNode signatures included), and answers every other path with 403.

Usage::

    python -m fedprofile.deploy.fleet_gateway --listen 0.0.0.0:9092 --upstream 127.0.0.1:9091
        --certfile server.pem --keyfile server.key --ca ca.crt

(one command line).
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FLEET_ROUTES", "KEEPALIVE_SECONDS", "LISTEN_KEEPALIVE_SECONDS", "create_app",
           "main", "upstream_client"]

# Every route of flwr 1.41's Fleet router (superlink/routers/fleet/router.py)
FLEET_ROUTES = frozenset({
    "register-node", "activate-node", "deactivate-node", "unregister-node",
    "send-node-heartbeat", "pull-messages", "push-messages", "get-run", "get-fab",
    "push-object", "pull-object", "confirm-message-received"})
_DROP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                   "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection",
                   "content-encoding"})
_DENIED = {"detail": "Only the Fleet API (SuperNode traffic) is served at this address."}
KEEPALIVE_SECONDS = 1.0
"""How long an idle connection to the SuperLink is reused: well below the 5 s after which
the SuperLink's server closes it, so a forwarded call never races that close (it did: the
SuperLink dropped a reused connection, the SuperNode got an error and stopped)."""
LISTEN_KEEPALIVE_SECONDS = 30
"""How long the gateway keeps a SuperNode's idle connection: longer than the SuperNode's own
client keeps it (5 s), so the SuperNode, not the gateway, closes it."""


def _headers(items: httpx.Headers | list[tuple[str, str]]) -> dict[str, str]:
    pairs = items.multi_items() if isinstance(items, httpx.Headers) else items
    return {k: v for k, v in pairs if k.lower() not in _DROP}


def upstream_client(upstream: str, verify: ssl.SSLContext | bool) -> httpx.AsyncClient:
    """The gateway's HTTPS client to the SuperLink at ``HOST:PORT``."""
    return httpx.AsyncClient(base_url=f"https://{upstream}", verify=verify,
                             timeout=httpx.Timeout(120.0),
                             limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


def create_app(upstream: httpx.AsyncClient) -> Starlette:
    """The gateway application, forwarding allowed Fleet calls to ``upstream``."""

    async def forward(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FLEET_ROUTES:
            return JSONResponse(_DENIED, status_code=403)
        try:
            reply = await upstream.post(f"/v1/fleet/{name}", content=await request.body(),
                                        headers=_headers(request.headers.items()))
        except httpx.TransportError as exc:
            detail = f"The SuperLink did not answer {name} ({type(exc).__name__}: {exc})."
            return JSONResponse({"detail": detail}, status_code=502)
        return Response(reply.content, status_code=reply.status_code,
                        headers=_headers(reply.headers))

    async def deny(request: Request) -> Response:
        return JSONResponse(_DENIED, status_code=403)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await upstream.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/v1/fleet/{name}", forward, methods=["POST"]),
                             Route("/{path:path}", deny, methods=methods)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    """Serve the gateway until stopped; returns the exit code."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve (TLS).")
    parser.add_argument("--upstream", required=True, help="The SuperLink's HOST:PORT.")
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    parser.add_argument("--ca", type=Path, required=True,
                        help="CA that signed the SuperLink's certificate.")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT. Got {args.listen!r}.")
    verify = ssl.create_default_context(cafile=str(args.ca))
    uvicorn.run(create_app(upstream_client(args.upstream, verify)), host=host.strip("[]"),
                port=int(port), ssl_certfile=str(args.certfile), ssl_keyfile=str(args.keyfile),
                log_level="warning", access_log=False,
                timeout_keep_alive=LISTEN_KEEPALIVE_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
