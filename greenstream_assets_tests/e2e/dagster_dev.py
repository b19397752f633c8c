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
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import dagster as dg
import yaml
from dagster_graphql import DagsterGraphQLClient

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")

T = TypeVar("T")
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
METADATA_VALUE_FIELDS = ("intValue", "floatValue", "text", "mdStr", "path", "boolValue")


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

    def instance(self) -> dg.DagsterInstance:
        """The instance at this home, loaded as a process whose DAGSTER_HOME is this home loads it
        (the local config takes its storage's base_dir from DAGSTER_HOME)."""
        saved = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.home)
        try:
            return dg.DagsterInstance.from_config(str(self.home))
        finally:
            if saved is None:
                del os.environ["DAGSTER_HOME"]
            else:
                os.environ["DAGSTER_HOME"] = saved

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

    # Helpers for the operations tests: what a person sees in the UI, asked through GraphQL.

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the dagster dev log (webserver, daemon and run workers), for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_until(
        self,
        what: str,
        condition: Callable[[], T | None],
        timeout: float = 240,
        interval: float = 1.0,
        state: Callable[[], object] | None = None,
    ) -> T:
        """Poll ``condition`` until it returns something truthy and return that; on timeout, fail
        saying what was awaited, the state it ended in, and the tail of the dagster dev log."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                seen = state() if state else None
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}\nstate: {seen!r}\n"
                    f"dagster dev log tail:\n{self.log_tail()}"
                )
            time.sleep(interval)

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def repository(self) -> dict[str, str]:
        """The one code location's RepositorySelector (location and repository name)."""
        data = self.graphql(
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
        )
        [repo] = data["repositoriesOrError"]["nodes"]
        return {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"]}

    def runs(self, job_name: str | None = None, tags: dict[str, str] | None = None) -> list[dict]:
        """Runs, newest first: runId, jobName, status, tags (as a dict), parent/root run ids."""
        run_filter: dict = {}
        if job_name:
            run_filter["pipelineName"] = job_name
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        data = self.graphql(RUNS_QUERY, {"filter": run_filter})
        runs = data["runsOrError"]["results"]
        for run in runs:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        return runs

    def in_flight(self) -> list[dict]:
        return [run for run in self.runs() if run["status"] not in FINISHED]

    def wait_for_run(self, run_id: str, timeout: float = 240) -> str:
        """Wait until the run has finished; return its final status (SUCCESS, FAILURE, CANCELED)."""
        client = self.client

        def finished() -> str | None:
            status = client.get_run_status(run_id).value
            return status if status in FINISHED else None

        return self.wait_until(
            f"run {run_id} to finish", finished, timeout, state=lambda: client.get_run_status(run_id)
        )

    def wait_until_idle(self, timeout: float = 240) -> None:
        """No run queued or running (the sensor may still tick; it launches nothing without new files)."""
        self.wait_until("every run to finish", lambda: not self.in_flight(), timeout, state=self.in_flight)

    def asset_nodes(self, keys: list[str] | None = None) -> list[dict]:
        """Asset nodes: key, group, jobs, dependencies, and checks (name, blocking, jobs, partitions)."""
        variables = {"keys": [{"path": [k]} for k in keys]} if keys else {}
        return self.graphql(ASSET_NODES_QUERY, variables)["assetNodes"]

    def partition_statuses(self, asset: str) -> dict[str, str]:
        """Day partition -> MATERIALIZED | FAILED | MATERIALIZING, as the asset's Partitions tab shows."""
        data = self.graphql(PARTITION_STATUS_QUERY, {"key": {"path": [asset]}})["assetNodeOrError"]
        statuses = data["assetPartitionStatuses"]
        assert statuses["__typename"] == "TimePartitionStatuses", statuses
        days: dict[str, str] = {}
        for span in statuses["ranges"]:
            day, last = date.fromisoformat(span["startKey"]), date.fromisoformat(span["endKey"])
            while day <= last:
                days[day.isoformat()] = span["status"]
                day += timedelta(days=1)
        return days

    def check_executions(self, asset: str, check: str, partition: str, limit: int = 5) -> list[dict]:
        """A check's executions for one partition, newest first, with metadata as a plain dict."""
        variables = {"key": {"path": [asset]}, "check": check, "partition": partition, "limit": limit}
        executions = self.graphql(CHECK_EXECUTIONS_QUERY, variables)["assetCheckExecutions"]
        for execution in executions:
            evaluation = execution["evaluation"]
            if evaluation is not None:
                evaluation["metadata"] = {
                    entry["label"]: next(
                        (entry[f] for f in METADATA_VALUE_FIELDS if entry.get(f) is not None), None
                    )
                    for entry in evaluation.pop("metadataEntries")
                }
        return executions

    def launch_materialization(
        self, assets: list[str], partition: str, preferred_job: str | None = None
    ) -> str:
        """Launch one partition of ``assets`` the way the UI's Materialize button does for a single
        partition (LaunchAssetChoosePartitionsDialog, "Launch 1 run"): the first job the assets share
        (or the page's job), the partition's tags as the server computes them, the assets' checks in
        that job, and launchPipelineExecution with the UI's execution tag. Returns the run id."""
        repository = self.repository()
        nodes = self.asset_nodes(assets)
        assert sorted(n["assetKey"]["path"][0] for n in nodes) == sorted(assets), nodes
        shared = [job for job in nodes[0]["jobNames"] if all(job in n["jobNames"] for n in nodes)]
        job = preferred_job if preferred_job in shared else shared[0]
        keys = [{"path": n["assetKey"]["path"]} for n in nodes]
        partition_data = self.graphql(
            PARTITION_CONFIG_QUERY,
            {**repository, "jobName": job, "partitionName": partition, "assetKeys": keys},
        )["pipelineOrError"]["partition"]
        tags = partition_data["tagsOrError"]["results"] + [{"key": "dagster/from_ui", "value": "true"}]
        checks = [
            {"assetKey": {"path": n["assetKey"]["path"]}, "name": c["name"]}
            for n in nodes
            for c in n["assetChecksOrError"]["checks"]
            if not c["jobNames"] or job in c["jobNames"]
        ]
        params = {
            "mode": "default",
            "runConfigData": partition_data["runConfigOrError"]["yaml"],
            "executionMetadata": {"tags": tags},
            "selector": {
                **repository,
                "pipelineName": job,
                "assetSelection": keys,
                "assetCheckSelection": checks,
            },
        }
        result = self.graphql(LAUNCH_MUTATION, {"executionParams": params})["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]


RUNS_QUERY = """
query ($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results { runId jobName status parentRunId rootRunId stepKeysToExecute tags { key value } }
    }
  }
}
"""
ASSET_NODES_QUERY = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    groupName
    jobNames
    isPartitioned
    dependencyKeys { path }
    assetChecksOrError {
      ... on AssetChecks { checks { name blocking jobNames partitionDefinition { type } } }
    }
  }
}
"""
PARTITION_STATUS_QUERY = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { startKey endKey status } }
      }
    }
  }
}
"""
CHECK_EXECUTIONS_QUERY = """
query ($key: AssetKeyInput!, $check: String!, $partition: String, $limit: Int!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: $limit) {
    runId
    status
    partition
    evaluation {
      success
      severity
      metadataEntries {
        label
        ... on IntMetadataEntry { intValue }
        ... on FloatMetadataEntry { floatValue }
        ... on TextMetadataEntry { text }
        ... on MarkdownMetadataEntry { mdStr }
        ... on PathMetadataEntry { path }
        ... on BoolMetadataEntry { boolValue }
      }
    }
  }
}
"""
# The UI's ConfigPartitionForAssetJobQuery and LaunchPipelineExecution mutation (dagster-webserver 1.13).
PARTITION_CONFIG_QUERY = """
query ($repositoryName: String!, $repositoryLocationName: String!, $jobName: String!,
       $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                           repositoryLocationName: $repositoryLocationName}) {
    ... on Pipeline {
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        runConfigOrError { ... on PartitionRunConfig { yaml } }
        tagsOrError { ... on PartitionTags { results { key value } } }
      }
    }
  }
}
"""
LAUNCH_MUTATION = """
mutation ($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
