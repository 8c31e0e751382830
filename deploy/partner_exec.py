"""The partner's launcher: a SuperExec that runs only ClientApps the partner approved.

Used instead of ``flower-superexec`` next to a SuperNode started with ``--isolation
process``. It takes ClientApp tasks from the SuperNode's runtime API (signed with the
SuperNode's SuperExec secret, so no other process can take them) and starts each one through
:mod:`fedprofile.deploy.app_guard`, which checks the FAB's SHA-256 against the partner's allow-list
before any of the app's code is unpacked or imported. Only ClientApp tasks are accepted.

Usage::

    python -m fedprofile.deploy.partner_exec --runtime-api-address 127.0.0.1:9094 --insecure
        --allow-list partner/approved-apps.txt --superexec-auth-secret-file partner/superexec.secret

(one command line).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fedprofile.deploy.app_guard import TOKEN_ENV, run_task
from fedprofile.deploy.warm_start import WarmStarter
from fedprofile.errors import ContractError

if TYPE_CHECKING:
    from flwr.supercore.runtime import RuntimeHttpClient

__all__ = ["READY_LINE", "check_allow_list", "main", "serve"]

_CLIENT_APP = "flwr-clientapp"
READY_LINE = "Warm ClientApp processes ready"
"""Logged once the launcher can start tasks warm (deployments may wait for it)."""


def check_allow_list(path: Path) -> int:
    """Number of approved FABs in ``path``; a clear error if it is missing or malformed."""
    from fedprofile.deploy.app_guard import read_allow_list

    try:
        approved = read_allow_list(path)
    except OSError:
        raise ContractError(f"The allow-list {path} cannot be read. Create it with "
                            "`fedprofile approve-app APP --allow-list PATH`.") from None
    except ValueError as exc:
        raise ContractError(str(exc)) from None
    if not approved:
        raise ContractError(f"The allow-list {path} approves no app. Add one with "
                            "`fedprofile approve-app APP --allow-list PATH`.")
    return len(approved)


def _client(address: str, insecure: bool, root_certificates: Path | None,
            secret_file: Path | None) -> RuntimeHttpClient:
    from flwr.supercore.auth import load_superexec_auth_secret
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    interceptors: list = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret_file is not None:
        secret = load_superexec_auth_secret(str(secret_file))
        assert secret is not None, "Flower returns None only when given no secret file"
        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods={"/flwr.proto.Runtime/AcquireTask"}))
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure,
        root_certificates=validate_and_resolve_root_certificates(
            None if root_certificates is None else str(root_certificates), insecure),
        interceptors=interceptors, retry_invoker=make_simple_http_retry_invoker())


def serve(address: str, allow_list: Path, *, insecure: bool = False,
          root_certificates: Path | None = None, secret_file: Path | None = None,
          poll_seconds: float = 0.1, cold_start: bool = False) -> None:
    """Take ClientApp tasks from the SuperNode at ``address`` forever; launch each guarded.

    Each task runs in a fork of the launcher's warm fork server
    (:mod:`fedprofile.deploy.warm_start`), or, with ``cold_start``, in a new interpreter
    (``python -P -m fedprofile.deploy.app_guard``). The SuperNode is asked again at once
    after a task and every ``poll_seconds`` while it has none (a local call: the round's
    wait is paid here, not on the network).
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore import log

    count = check_allow_list(allow_list)
    log(20, "[fedprofile launcher] %d approved app(s) in %s", count, allow_list)
    warm = None
    if not cold_start:
        warm = WarmStarter()
        started = time.perf_counter()
        warm.start_server()
        log(20, "[fedprofile launcher] %s (%s imported in %.1f s).", READY_LINE,
            ", ".join(warm.preload), time.perf_counter() - started)
    client = _client(address, insecure, root_certificates, secret_file)
    security = ["--insecure"] if insecure else (
        ["--root-certificates", str(root_certificates)] if root_certificates else [])
    children: list[subprocess.Popen[bytes]] = []
    while True:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[_CLIENT_APP]))
        if res.HasField("task") and res.token:
            if res.task.type != _CLIENT_APP:
                log(40, "[fedprofile launcher] Task %d of type %r refused: only ClientApps run "
                    "here.", res.task.task_id, res.task.type)
            elif warm is not None:
                warm.start(run_task, address, allow_list, res.token, insecure=insecure,
                           root_certificates=root_certificates, parent_pid=os.getpid())
            else:
                env = {**os.environ, TOKEN_ENV: res.token}
                children.append(subprocess.Popen(  # the token travels in the environment
                    [sys.executable, "-P", "-m", "fedprofile.deploy.app_guard",
                     "--runtime-api-address", address, "--allow-list", str(allow_list),
                     "--parent-pid", str(os.getpid()),
                     *security], env=env))
            continue
        children = [c for c in children if c.poll() is None]
        WarmStarter.reap()
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True,
                        help="The SuperNode's runtime API (its --host:--port).")
    parser.add_argument("--allow-list", type=Path, required=True,
                        help="The partner's approved FAB digests (fedprofile approve-app).")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", type=Path)
    parser.add_argument("--superexec-auth-secret-file", type=Path,
                        help="The secret given to the SuperNode's same flag.")
    parser.add_argument("--poll-seconds", type=float, default=0.1)
    parser.add_argument("--cold-start", action="store_true",
                        help="Start every ClientApp in a new interpreter instead of a warm fork.")
    args = parser.parse_args(argv)
    if args.insecure and args.root_certificates:
        parser.error("--insecure and --root-certificates exclude each other.")
    try:
        serve(args.runtime_api_address, args.allow_list, insecure=args.insecure,
              root_certificates=args.root_certificates,
              secret_file=args.superexec_auth_secret_file, poll_seconds=args.poll_seconds,
              cold_start=args.cold_start)
    except ContractError as exc:
        print(f"Error: {exc}", file=sys.stderr)  # noqa: T201 - command-line message
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
