"""A real deployment on one machine, as separate processes.

The SuperLink and SuperNodes run with TLS and SuperNode authentication on, and the same
Flower app is run with ``flwr run``.

Used by ``make deploy-demo`` and the integration test. Every process is started in its own
session and stopped by PID (its whole process group), also when something fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedprofile.credentials import Credentials, create_credentials
from fedprofile.errors import FedprofileError
from fedprofile.processes import descendants

__all__ = ["DeploymentError", "LoopbackFederation", "free_port", "node_config_text"]

APP_DIR = Path(__file__).resolve().parent.parent
FEDERATION = "loopback"


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
    """

    root: Path
    partners: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
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
                "PYTHONUNBUFFERED": "1"}

    def _spawn(self, role: str, args: list[str], home: Path) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{role}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                env=self._env(home), start_new_session=True)
        self.processes[role] = proc
        return proc

    def _wait_for_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes["superlink"].poll() is not None:
                raise DeploymentError(f"The SuperLink exited; see {self.logs / 'superlink.log'}.")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                         timeout=1):
                return
            time.sleep(0.3)
        raise DeploymentError(f"The SuperLink did not listen on port {self.port} within "
                              f"{timeout:g} s; see {self.logs / 'superlink.log'}.")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this federation (TLS with the federation's CA)."""
        return subprocess.run([_bin("flwr"), *args], capture_output=True, text=True,
                              cwd=APP_DIR, env=self._env(self.root / "cli"), timeout=timeout,
                              check=False)

    def start_superlink(self) -> None:
        """Start the SuperLink with TLS, SuperNode authentication and a state database."""
        self.credentials = create_credentials(self.root / "credentials",
                                              partners=len(self.partners))
        c = self.credentials
        home = self.root / "superlink"
        self._spawn("superlink", [
            _bin("flower-superlink"), "--ssl-ca-certfile", str(c.ca_cert),
            "--ssl-certfile", str(c.server_cert), "--ssl-keyfile", str(c.server_key),
            "--enable-supernode-auth", "--database", str(home / "state.db"),
            "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
            "--port", str(self.port)], home)
        (self.root / "cli").mkdir(parents=True, exist_ok=True)
        (self.root / "cli" / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{c.ca_cert}"\n',
            encoding="utf-8")
        self._wait_for_port(60.0)

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

        ``role`` names the process and its log (default ``partner-<index + 1>``).
        """
        creds = self._credentials()
        private = key or creds.partner_keys[index][0]
        name = role or f"partner-{index + 1}"
        security = ["--root-certificates", str(creds.ca_cert)] if tls else ["--insecure"]
        return self._spawn(name, [
            _bin("flower-supernode"), *security, "--auth-supernode-private-key", str(private),
            "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
            "--port", str(free_port()), "--max-retries", "3", "--max-wait-time", "20",
            "--node-config", node_config_text(self.partners[index])],
            self.root / "nodes" / name)

    def run(self, run_config: Mapping[str, Any], *, timeout: float = 900.0
            ) -> subprocess.CompletedProcess[str]:
        """``flwr run`` the app on this federation and wait for the run to end."""
        text = node_config_text(run_config)
        done = self.cli("run", str(APP_DIR), FEDERATION, "--run-config", text, "--stream",
                        timeout=timeout)
        (self.logs / "flwr-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        return done

    def run_in_background(self, run_config: Mapping[str, Any]) -> subprocess.Popen[str]:
        """Start ``flwr run`` without waiting; read its output with ``communicate()``."""
        return subprocess.Popen(
            [_bin("flwr"), "run", str(APP_DIR), FEDERATION, "--run-config",
             node_config_text(run_config), "--stream"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=APP_DIR, env=self._env(self.root / "cli"))

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

    @contextlib.contextmanager
    def running(self) -> Iterator[LoopbackFederation]:
        """Start the SuperLink and register keys; stop everything on exit, whatever happens."""
        try:
            self.start_superlink()
            self.register_partners()
            yield self
        finally:
            self.stop()
