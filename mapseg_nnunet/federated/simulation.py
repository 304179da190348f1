"""Run Fed-MAPSeg on one machine with Flower's own runtimes, and the process helpers shared with the tests.

    mapseg_federated_simulation -s SOURCE -t T1 T2 [T3 ...] -p MAPSegPlans [-tr nnUNetTrainerMAPSegFed]

starts a simulation SuperLink (Flower's simulation runtime: one virtual SuperNode per target dataset on Ray),
submits the Fed-MAPSeg app with ``flwr run --stream`` and stops the SuperLink when the run ends. Clients are
registered targets of the source (``mapseg_register_targets``); the global model lands where ``nnUNetv2_train``
would put the server trainer's model, e.g. ``nnUNet_results/DatasetXXX/nnUNetTrainerMAPSegFed__MAPSegPlans__3d_fullres
/fold_0``. A real deployment runs the same app with ``flower-superlink`` and one ``flower-supernode`` per site
(README)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from typing import Dict, List, Optional

APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")
BIN = os.path.dirname(sys.executable)


def app_config_defaults() -> Dict[str, object]:
    """``[tool.flwr.app.config]`` of the app bundle: the defaults of every Fed-MAPSeg run setting."""
    with open(os.path.join(APP_DIR, "pyproject.toml"), "rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def flower_environment(flwr_home: str) -> Dict[str, str]:
    """Offline, quiet Flower: no telemetry or update checks, a private FLWR_HOME, no per-run dependency
    installation."""
    env = dict(os.environ)
    env.update({"FLWR_HOME": flwr_home, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "GRPC_VERBOSITY": "NONE", "PATH": BIN + os.pathsep + env.get("PATH", "")})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log_file: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; see {log_file}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{process.args[0]} did not listen on port {port} within {timeout:.0f} s; see {log_file}")


def flower_config_string(config: Dict[str, object]) -> str:
    """``key1=1 key2="text"``: Flower's run / node / federation config syntax."""
    return " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in config.items())


class LocalFlower:
    """Flower processes on this machine (loopback, no TLS), each in its own process group with its log in
    ``workdir``; ``stop()`` (or leaving the ``with`` block) terminates them and their children."""

    def __init__(self, workdir: str):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.env = flower_environment(os.path.join(workdir, "flwr_home"))
        self.processes: List[subprocess.Popen] = []
        self.address: Optional[str] = None

    def _start(self, name: str, command: List[str]) -> tuple:
        log_file = os.path.join(self.workdir, f"{name}.log")
        process = subprocess.Popen(command, env=self.env, stdout=open(log_file, "w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process, log_file

    def start_superlink(self, simulation: bool) -> str:
        port, control = free_port(), free_port()
        command = [os.path.join(BIN, "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                   "--control-api-address", f"127.0.0.1:{control}", "--isolation", "subprocess",
                   "--disable-runtime-dependency-installation"] + (["--simulation"] if simulation else [])
        process, log_file = self._start("superlink", command)
        wait_for_port(port, process, log_file)
        self.address = f"127.0.0.1:{port}"
        os.makedirs(self.env["FLWR_HOME"], exist_ok=True)
        with open(os.path.join(self.env["FLWR_HOME"], "config.toml"), "w") as f:
            f.write(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{self.address}"\n'
                    f'insecure = true\n')
        return self.address

    def start_supernode(self, name: str, node_config: Dict[str, object]) -> subprocess.Popen:
        config = flower_config_string(node_config)
        command = [os.path.join(BIN, "flower-supernode"), "--insecure", "--superlink", self.address, "--host",
                   "127.0.0.1", "--port", str(free_port()), "--isolation", "subprocess", "--node-config", config]
        return self._start(name, command)[0]

    def run(self, run_config: Dict[str, object], federation_config: Optional[Dict[str, object]] = None,
            app_dir: str = APP_DIR, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        """``flwr run APP local --stream`` with the run config; its output goes to the caller's terminal and to
        ``workdir/run.log``."""
        command = [os.path.join(BIN, "flwr"), "run", app_dir, "local", "--stream", "--run-config",
                   flower_config_string(run_config)]
        if federation_config:
            command += ["--federation-config", flower_config_string(federation_config)]
        with open(os.path.join(self.workdir, "run.log"), "w") as log:
            process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True)
            self.processes.append(process)
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
            process.wait(timeout)
        return subprocess.CompletedProcess(command, process.returncode)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
