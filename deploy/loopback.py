"""A real deployment on one machine, as separate processes.

The SuperLink runs with TLS and SuperNode authentication on and listens on its own port, for
the coordinator's ``flwr`` CLI only; partners reach it through the Fleet-only gateway
(:mod:`fedprofile.deploy.fleet_gateway`), the one address an outsider can reach. Each
partner runs its SuperNode with ``--isolation process`` and its own launcher
(:mod:`fedprofile.deploy.partner_exec`), which runs a ClientApp only if the FAB's SHA-256 is
in the partner's allow-list. The app is snapshotted once (so edits made while the federation
runs cannot change what partners approved) and run with ``flwr run``.

Used by ``make deploy-demo`` and the integration test. Every process is started in its own
session and stopped by PID (its whole process group), also when something fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedprofile.deploy.app_guard import add_to_allow_list
from fedprofile.deploy.approval import app_digest
from fedprofile.deploy.credentials import Credentials, create_credentials, create_superexec_secret
from fedprofile.deploy.partner_exec import READY_LINE
from fedprofile.errors import FedprofileError
from fedprofile.processes import descendants

__all__ = ["DeploymentError", "LoopbackFederation", "free_port", "node_config_text",
           "snapshot_app"]

APP_DIR = Path(__file__).resolve().parent.parent
FEDERATION = "loopback"  # the coordinator's connection: the SuperLink's own port
PUBLIC = "public"  # what anyone else can reach: the Fleet-only gateway
_TRANSFER = re.compile(r"Sending:|Sent successfully|Receiving:|Received successfully")
"""A SuperNode's log lines for the start and end of each message it sends or receives."""


class DeploymentError(FedprofileError):
    """A deployment process failed to start or a run failed; the message names the log."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_config_text(config: Mapping[str, Any]) -> str:
    """Flower's ``--node-config`` syntax: ``key='text' number=1``."""
    parts = []
    for key, value in config.items():
        parts.append(f"{key}={value}" if isinstance(value, int | float) and
                     not isinstance(value, bool) else f"{key}='{value}'")
    return " ".join(parts)


def snapshot_app(source: Path, out: Path) -> Path:
    """Unpack the FAB ``flwr run SOURCE`` would ship into ``out``; return ``out``."""
    from flwr.cli.build import build_fab_from_disk

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(source))) as fab:
        for name in fab.namelist():
            if not name.startswith(".info/"):
                fab.extract(name, out)
    return out


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class LoopbackFederation:
    """A coordinator and partners on 127.0.0.1, each with its own folder and log.

    Parameters
    ----------
    root : Path
        Folder for credentials, state, logs and outputs.
    partners : list of dict
        Each partner's node config (``data-path``, ``spec``, ``partner-name``, ...).
    app_dir : Path
        The Flower app the coordinator runs (snapshotted when the federation starts).
    """

    root: Path
    partners: list[dict[str, Any]]
    app_dir: Path = APP_DIR
    port: int = field(default_factory=free_port)  # the public Fleet gateway
    control_port: int = field(default_factory=free_port)  # the SuperLink: coordinator only
    app_digest: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    credentials: Credentials | None = None

    @property
    def logs(self) -> Path:
        """Folder of the per-role logs."""
        return self.root / "logs"

    def _env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, "FLWR_HOME": str(home),
                "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                # the SuperLink's SuperExec takes the ServerApp task within 0.1 s, not 1 s
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", "PYTHONUNBUFFERED": "1"}

    def _spawn(self, role: str, args: list[str], home: Path) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{role}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                env=self._env(home), start_new_session=True)
        self.processes[role] = proc
        return proc

    def _wait_for_port(self, role: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[role].poll() is not None:
                raise DeploymentError(f"The {role} exited; see {self.logs / role}.log.")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                         timeout=1):
                return
            time.sleep(0.3)
        raise DeploymentError(f"The {role} did not listen on port {port} within "
                              f"{timeout:g} s; see {self.logs / role}.log.")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this federation (TLS with the federation's CA)."""
        return subprocess.run([_bin("flwr"), *args], capture_output=True, text=True,
                              cwd=APP_DIR, env=self._env(self.root / "cli"), timeout=timeout,
                              check=False)

    def start_superlink(self) -> None:
        """Start the SuperLink (TLS, SuperNode authentication, state database) and the gateway.

        The ``flwr`` CLI gets two connections: ``loopback`` (the SuperLink itself, as the
        coordinator) and ``public`` (the gateway, all an outsider can reach).
        """
        self.credentials = create_credentials(self.root / "credentials",
                                              partners=len(self.partners))
        c = self.credentials
        home = self.root / "superlink"
        for stale in home.glob("state.db*"):  # no node or run of an earlier federation here:
            stale.unlink()  # its nodes would look online for another minute
        self._spawn("superlink", [
            _bin("flower-superlink"), "--ssl-ca-certfile", str(c.ca_cert),
            "--ssl-certfile", str(c.server_cert), "--ssl-keyfile", str(c.server_key),
            "--enable-supernode-auth", "--database", str(home / "state.db"),
            "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
            "--port", str(self.control_port)], home)
        self._spawn("gateway", [
            sys.executable, "-m", "fedprofile.deploy.fleet_gateway",
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", f"127.0.0.1:{self.control_port}", "--certfile", str(c.server_cert),
            "--keyfile", str(c.server_key), "--ca", str(c.ca_cert)], self.root / "gateway")
        (self.root / "cli").mkdir(parents=True, exist_ok=True)
        (self.root / "cli" / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.control_port}"\nroot-certificates = "{c.ca_cert}"\n\n'
            f'[superlink.{PUBLIC}]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{c.ca_cert}"\n', encoding="utf-8")
        self._wait_for_port("superlink", self.control_port, 60.0)
        self._wait_for_port("gateway", self.port, 60.0)

    def prepare_app(self) -> str:
        """Snapshot the app, approve its FAB at every partner; return the FAB's SHA-256."""
        self.app_dir = snapshot_app(self.app_dir, self.root / "app")
        self.app_digest = app_digest(self.app_dir)
        for i in range(len(self.partners)):
            add_to_allow_list(self.allow_list(i), self.app_digest, note="fedprofile")
        return self.app_digest

    def partner_home(self, index: int) -> Path:
        """Partner ``index``'s node folder (FLWR_HOME, allow-list, SuperExec secret)."""
        return self.root / "nodes" / f"partner-{index + 1}"

    def allow_list(self, index: int) -> Path:
        """Partner ``index``'s allow-list of approved FAB digests."""
        return self.partner_home(index) / "approved-apps.txt"

    def _credentials(self) -> Credentials:
        if self.credentials is None:
            raise DeploymentError("Start the SuperLink first (it creates the credentials).")
        return self.credentials

    def register_partners(self) -> None:
        """Register every partner's public key at the SuperLink."""
        for i, (_, public) in enumerate(self._credentials().partner_keys):
            done = self.cli("supernode", "register", str(public), FEDERATION)
            if done.returncode != 0:
                raise DeploymentError(f"Registering partner {i + 1}'s key failed: "
                                      f"{done.stdout[-400:]}{done.stderr[-400:]}")

    def start_partner(self, index: int, *, key: Path | None = None, tls: bool = True,
                      role: str | None = None) -> subprocess.Popen[bytes]:
        """Start partner ``index``'s SuperNode (with its own key unless ``key`` is given).

        The SuperNode connects through the public gateway and runs with ``--isolation
        process``; the partner's launcher (``<role>-exec``) runs its approved ClientApps.
        ``role`` names the SuperNode process and its log (default ``partner-<index + 1>``).
        """
        creds = self._credentials()
        private = key or creds.partner_keys[index][0]
        name = role or f"partner-{index + 1}"
        home = self.root / "nodes" / name
        secret = create_superexec_secret(home / "superexec.secret")
        runtime = f"127.0.0.1:{free_port()}"
        security = ["--root-certificates", str(creds.ca_cert)] if tls else ["--insecure"]
        node = self._spawn(name, [
            sys.executable, "-m", "fedprofile.deploy.supernode", *security,
            "--auth-supernode-private-key", str(private),
            "--superlink", f"127.0.0.1:{self.port}", "--isolation", "process",
            "--superexec-auth-secret-file", str(secret), "--host", "127.0.0.1",
            "--port", runtime.rsplit(":", 1)[1], "--max-retries", "3", "--max-wait-time", "20",
            "--node-config", node_config_text(self.partners[index])], home)
        self._spawn(f"{name}-exec", [
            sys.executable, "-P", "-m", "fedprofile.deploy.partner_exec",
            "--runtime-api-address", runtime,
            "--insecure", "--allow-list", str(self.allow_list(index)),
            "--superexec-auth-secret-file", str(secret)], home)
        return node

    def wait_for_launchers(self, timeout: float = 180.0) -> None:
        """Wait until every started partner's launcher has its warm ClientApp processes ready.

        A deployed launcher starts long before a run; here every partner starts at once on
        the same cores, so without this the first round would time the launchers' start-up.
        """
        deadline = time.monotonic() + timeout
        for role in [r for r in self.processes if r.endswith("-exec")]:
            log = self.logs / f"{role}.log"
            while READY_LINE not in log.read_text(encoding="utf-8", errors="replace"):
                if self.processes[role].poll() is not None:
                    raise DeploymentError(f"The {role} launcher exited; see {log}.")
                if time.monotonic() > deadline:
                    raise DeploymentError(f"The {role} launcher was not ready within "
                                          f"{timeout:g} s; see {log}.")
                time.sleep(0.2)

    def run(self, run_config: Mapping[str, Any], *, timeout: float = 900.0
            ) -> subprocess.CompletedProcess[str]:
        """``flwr run`` the app on this federation and wait for the run to end."""
        text = node_config_text(run_config)
        done = self.cli("run", str(self.app_dir), FEDERATION, "--run-config", text, "--stream",
                        timeout=timeout)
        (self.logs / "flwr-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        return done

    def run_in_background(self, run_config: Mapping[str, Any]) -> subprocess.Popen[str]:
        """Start ``flwr run`` without waiting; read its output with ``communicate()``."""
        return subprocess.Popen(
            [_bin("flwr"), "run", str(self.app_dir), FEDERATION, "--run-config",
             node_config_text(run_config), "--stream"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=APP_DIR, env=self._env(self.root / "cli"))

    def kill_partner_after_release(self, index: int, *, timeout: float = 300.0) -> None:
        """Kill partner ``index``'s SuperNode right after it has sent a release.

        Waits until the partner's ledger holds one more release than when called and its
        SuperNode's log shows that reply sent and nothing received since, then kills the
        SuperNode's process group: the partner vanishes after sending its (masked) reply and
        before the next message reaches it, as a crashed machine would. Killed while
        uploading, it can take another partner's reply with it: Flower 1.41 then reports a
        surviving partner's reply part "not found" (seen twice on loopback, once at a fixed
        1.5 s after the release), and that partner is dropped too.
        """
        from fedprofile.privacy.ledger import Ledger

        def releases() -> int:
            path = Path(self.partners[index]["state-dir"]) / "ledger.sqlite"
            if not path.exists():
                return 0
            with Ledger(path) as ledger:
                return len(ledger.events())

        def sent_and_idle() -> bool:
            log = self.logs / f"partner-{index + 1}.log"
            steps = _TRANSFER.findall(log.read_text(encoding="utf-8", errors="replace"))
            return bool(steps) and steps[-1] == "Sent successfully"

        start = time.monotonic()
        baseline = releases()
        while releases() <= baseline and time.monotonic() - start < timeout:
            time.sleep(0.1)
        while not sent_and_idle() and time.monotonic() - start < timeout:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes[f"partner-{index + 1}"].pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop exactly the processes this object started, and their descendants."""
        helpers = descendants({p.pid for p in self.processes.values()})
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for pid in helpers:  # detached helpers (superexec, clientapp) of our processes
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def alive(self) -> list[int]:
        """PIDs of started processes and their descendants that are still running."""
        pids = {p.pid for p in self.processes.values() if p.poll() is None}
        return sorted(pids | descendants({p.pid for p in self.processes.values()}))

    def exchange_secagg_keys(self) -> None:
        """Give every partner the others' secure-aggregation signing keys.

        In a real deployment each partner's administrator does this out of band (``fedprofile
        secagg-keys``), so the coordinator cannot swap a partner's key. Partners configured
        without a ``state-dir`` keep their default folder and are left out of the exchange.
        """
        from fedprofile.client.secure import trust_each_other

        trust_each_other({p["partner-name"]: Path(p["state-dir"]) for p in self.partners
                          if p.get("state-dir")})

    @contextlib.contextmanager
    def running(self) -> Iterator[LoopbackFederation]:
        """Start the SuperLink, register and exchange keys, approve the app; stop on exit."""
        try:
            self.start_superlink()
            self.register_partners()
            self.exchange_secagg_keys()
            self.prepare_app()
            yield self
        finally:
            self.stop()
