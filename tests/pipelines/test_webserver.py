"""The code location loads in a real dagster-webserver, whose GraphQL API lists every asset, check, schedule and sensor."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.definitions import defs as load_definitions

defs = load_definitions()

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180

LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
REPOSITORY_QUERY = """
{ repositoriesOrError { __typename ... on RepositoryConnection { nodes {
    location { name }
    schedules { name cronSchedule executionTimezone pipelineName }
    sensors { name targets { pipelineName } }
    jobs { name }
    assetNodes { assetKey { path } isPartitioned
        assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } }
} } } }
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(client: httpx.Client, query: str) -> dict:
    response = client.post("/graphql", json={"query": query})
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture
def webserver(crossfade_home: Path) -> Iterator[httpx.Client]:
    """dagster-webserver on a free local port with DAGSTER_HOME in tmp; stopped (its whole process group) afterwards."""
    dagster_home = crossfade_home / "dagster"
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    log = (crossfade_home / "webserver.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-p", str(port), "-h", "127.0.0.1"],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(dagster_home)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server is a child: stop the group, not just the webserver
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                entries = _graphql(client, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
                status = [(entry["loadStatus"], entry["locationOrLoadError"]) for entry in entries]
                if entries and all(load == "LOADED" for load, _ in status):
                    break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(1)
        else:
            raise AssertionError(f"webserver not ready in {STARTUP_TIMEOUT_S} s (exit {server.poll()}, status {status}): "
                                 f"{(crossfade_home / 'webserver.log').read_text()[-3000:]}")
        yield client
    finally:
        client.close()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_graphql_lists_every_asset_check_schedule_and_sensor(webserver: httpx.Client) -> None:
    entries = _graphql(webserver, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    assert [(entry["name"], entry["locationOrLoadError"]["__typename"]) for entry in entries] == [
        ("pipelines.definitions", "RepositoryLocation"),
    ]
    (repository,) = _graphql(webserver, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    graph = defs.resolve_asset_graph()

    assets = {tuple(node["assetKey"]["path"]): node for node in repository["assetNodes"]}
    assert set(assets) == {tuple(key.path) for key in graph.get_all_asset_keys()}
    assert {key for key, node in assets.items() if node["isPartitioned"]} == {
        tuple(key.path) for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None
    }

    checks = {
        (tuple(key), check["name"], check["blocking"])
        for key, node in assets.items() for check in node["assetChecksOrError"]["checks"]
    }
    assert checks == {
        (tuple(spec.asset_key.path), spec.name, spec.blocking) for definition in defs.asset_checks for spec in definition.check_specs
    }

    assert [(s["name"], s["cronSchedule"], s["executionTimezone"], s["pipelineName"]) for s in repository["schedules"]] == [
        ("nightly_schedule", "0 2 * * *", "UTC", "nightly"),
    ]
    assert {s.name for s in defs.schedules} == {s["name"] for s in repository["schedules"]}
    assert [(s["name"], [t["pipelineName"] for t in s["targets"]]) for s in repository["sensors"]] == [("landing_sensor", ["ingest"])]
    assert {s.name for s in defs.sensors} == {s["name"] for s in repository["sensors"]}
    assert {"ingest", "nightly", "refresh"} <= {job["name"] for job in repository["jobs"]}
