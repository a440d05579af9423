"""Several `python -m bot` processes sharing one STORE_URL: start them, ask each for /healthz and
/metrics, kill one with SIGKILL, stop the rest. Logs go to files (a pipe nobody reads would
block a chatty process), read back for the assertions.

    with Replicas(env, tmp_path, count=3, webhook=True) as replicas:
        replicas.wait_healthy()
        replicas[0].kill()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_URL = "https://bot.example.org/hook"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Replica:
    """One bot process: its ports, its log, and what its /healthz and /metrics say."""

    def __init__(self, index: int, env: dict[str, str], cwd: Path, *, webhook: bool) -> None:
        self.index = index
        self.metrics_port = free_port()
        self.webhook_port = free_port() if webhook else None
        self.log = cwd / f"replica-{index}.log"
        self.data_dir = cwd / f"replica-{index}"
        full = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(cwd),
            "PYTHONPATH": str(ROOT),
            **env,
            "DATA_DIR": str(self.data_dir),
            "METRICS_PORT": str(self.metrics_port),
            "METRICS_LISTEN": "127.0.0.1",
        }
        if self.webhook_port is not None:
            full.update(
                WEBHOOK_URL=WEBHOOK_URL,
                WEBHOOK_LISTEN="127.0.0.1",
                WEBHOOK_PORT=str(self.webhook_port),
            )
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot"],
                cwd=cwd,
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def __repr__(self) -> str:
        return f"Replica({self.index}, pid={self.proc.pid})"

    @property
    def webhook(self) -> str:
        """Return the root URL of this replica's webhook server."""
        return f"http://127.0.0.1:{self.webhook_port}"

    def instance_id(self) -> str:
        """Return the id this replica's jobs are stored under (its DATA_DIR's instance-id)."""
        return (self.data_dir / "instance-id").read_text().strip()

    def output(self) -> str:
        """Return what the process logged so far."""
        return self.log.read_text(errors="replace")

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def health(self) -> tuple[int, dict[str, object]] | None:
        """Return /healthz's status and body, or None while nothing answers."""
        try:
            status, body = self._get("/healthz")
        except OSError:
            return None
        return status, json.loads(body)

    def metric(self, name: str) -> float:
        """Return the value of one unlabelled sample of /metrics."""
        _, body = self._get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"/metrics of {self} has no {name}")

    def receiving(self) -> bool:
        """Tell whether this replica takes updates (the polling leader, or any webhook one)."""
        return self.metric("imagebot_receiving_updates") == 1

    def kill(self) -> None:
        """Kill the process with SIGKILL (no clean-up of any kind) and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """Stop the process with SIGTERM; return its exit status (killed if it hangs)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            message = f"{self} did not stop on SIGTERM:\n{self.output()[-3000:]}"
            raise AssertionError(message) from None


class Replicas:
    """`count` replicas of the bot with one environment (and so one STORE_URL)."""

    def __init__(self, env: dict[str, str], cwd: Path, *, count: int, webhook: bool) -> None:
        self._env = env
        self._cwd = cwd
        self._count = count
        self._webhook = webhook
        self.replicas: list[Replica] = []

    def __enter__(self) -> Self:
        self.replicas = [
            Replica(i, self._env, self._cwd, webhook=self._webhook) for i in range(self._count)
        ]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for replica in self.replicas:
            if replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait(timeout=10)

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __iter__(self):
        return iter(self.replicas)

    @property
    def alive(self) -> list[Replica]:
        """Return the replicas whose process still runs."""
        return [r for r in self.replicas if r.proc.poll() is None]

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every live replica answers /healthz with 200."""
        deadline = time.monotonic() + timeout
        for replica in self.alive:
            while (answer := replica.health()) is None or answer[0] != 200:
                if replica.proc.poll() is not None:
                    raise AssertionError(f"{replica} exited:\n{replica.output()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{replica} is not healthy ({answer}):\n{replica.output()[-3000:]}"
                    )
                time.sleep(0.1)

    def leaders(self) -> list[Replica]:
        """Return the live replicas that take updates now."""
        return [r for r in self.alive if r.receiving()]

    def wait_one_leader(self, timeout: float = 20.0) -> Replica:
        """Wait until exactly one live replica takes updates; return it."""
        deadline = time.monotonic() + timeout
        while len(leaders := self.leaders()) != 1:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(leaders)} replicas take updates: {leaders}")
            time.sleep(0.1)
        return leaders[0]

    def stop(self) -> dict[int, tuple[int, str]]:
        """Stop every live replica; return each one's exit status and log by index."""
        return {r.index: (r.stop(), r.output()) for r in self.replicas}
