"""`dagster dev` (webserver + daemon) as a test fixture: a free port, a temporary DAGSTER_HOME, and a
clean stop (`env --default-signal=INT,TERM`: from a script, dagster dev otherwise ignores both)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    def __init__(self, home: Path, env: dict[str, str], instance_config: dict | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DAGSTER_HOME": str(home), **env}
        home.mkdir(parents=True, exist_ok=True)
        config = instance_config or yaml.safe_load(
            (REPO / "greenstream_assets/dagster_local.yaml").read_text()
        )
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        # Keep the welcome modal out of the UI (and out of screenshots).
        (home / ".nux").mkdir(exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        self.log_path = home / "dagster-dev.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> DagsterDev:
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                "env",
                "--default-signal=INT,TERM",
                DAGSTER,
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                data = self.graphql(
                    "{ workspaceOrError { __typename ... on Workspace { locationEntries "
                    "{ locationOrLoadError { __typename } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    return self
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"dagster dev did not come up:\n{self.log_path.read_text()[-3000:]}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            payload = json.loads(reply.read())
        if payload.get("errors"):
            raise AssertionError(payload["errors"])
        return payload["data"]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        finally:
            self.log.close()
