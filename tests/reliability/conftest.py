"""Reliability fixtures: table checksums, a writer process killed at a chosen point, stub LLM endpoints."""
from __future__ import annotations

import contextlib
import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from warehouse.store import CLIENT_SQL, Store

ROOT = Path(__file__).resolve().parents[2]
CHECKED_TABLES = (
    "raw.events", "raw.rejected_events", "raw.items", "raw.users", "raw.rejected_records",
    "features.splits", "features.interactions", "features.user_stats", "features.item_stats",
    "features.co_listen_edges",
)


def checksums(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str] | None]:
    """Row count and digest of every checked table (None when absent), with source files relative to their landing zone.

    Relative paths make a warehouse copied to another home, or built from a copied landing zone, comparable.
    """
    result: dict[str, tuple[int, str] | None] = {}
    for table in CHECKED_TABLES:
        schema, name = table.split(".")
        names = {row[0] for row in con.execute(
            "select column_name from information_schema.columns where table_schema = $schema and table_name = $name",
            {"schema": schema, "name": name},
        ).fetchall()}
        if not names:
            result[table] = None
            continue
        relative = "* replace (regexp_replace(source_file, '^.*/landing/', '') as source_file)" if "source_file" in names else "*"
        result[table] = con.execute(
            f"""
            with t as (select {relative} from {table})
            select count(*), md5(coalesce(string_agg(cast(t as varchar), chr(10) order by cast(t as varchar)), '')) from t
            """
        ).fetchall()[0]
    return result


def ingest_totals(con: duckdb.DuckDBPyConnection) -> tuple:
    """Per arrival day, the last logged accounting: (partitions, read, accepted, rejected, duplicates)."""
    return con.execute(
        """
        with last as (
            select arrival_date, arg_max(struct_pack(count_read, count_accepted, count_rejected, count_duplicates),
                                         ingested_at) as c
            from raw.ingest_log group by 1
        )
        select count(*), sum(c.count_read), sum(c.count_accepted), sum(c.count_rejected), sum(c.count_duplicates)
        from last
        """
    ).fetchall()[0]


@contextlib.contextmanager
def published_state_kept(store: Store) -> Iterator[None]:
    """Asserts on the way out that the published state files kept their bytes and a reader gets the same answers."""
    paths = (store.state_path, store.root / CLIENT_SQL)
    published = [path.read_bytes() for path in paths]
    with store.read() as con:
        answers = checksums(con)
    yield
    assert [path.read_bytes() for path in paths] == published
    with store.read() as con:
        assert checksums(con) == answers


# A writer that pauses after the n-th run of one SQL file (or just before published.json is replaced) so that
# it can be killed at a known point: with a transaction open, between two feature tables, or mid-publish.
KILLABLE_WRITER = """
import datetime as dt
import os
import sys
from pathlib import Path

from tests.reliability import pause_points
from warehouse import features, ingest, landing, store
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table

database, landing_dir, pause_at, occurrence, as_of, steps = sys.argv[1:7]
landing_dir = Path(landing_dir)
pause_points.arm(pause_at, int(occurrence))
ingest.run_sql = pause_points.after_sql(ingest.run_sql)
features.run_sql = pause_points.after_sql(features.run_sql)
os.replace = pause_points.before_publish(os.replace)
with store.Store(Path(database)).write() as con:
    print("writing", flush=True)
    if "ingest" in steps:
        ingest.ingest_items(con, landing_dir, ("music", "podcast", "audiobook"))
        ingest.ingest_users(con, landing_dir)
        for key in landing.event_partitions(landing_dir):
            ingest.ingest_events(con, landing_dir, key)
    if "features" in steps:
        params = FeatureParams(as_of=dt.date.fromisoformat(as_of))
        for name in FEATURE_TABLES:
            build_table(con, name, params)
print("done", flush=True)
"""


def start_writer(database: Path, landing_dir: Path, *, pause_at: str = "", occurrence: int = 1,
                 as_of: str = "", steps: str = "ingest,features") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", KILLABLE_WRITER, str(database), str(landing_dir), pause_at, str(occurrence), as_of, steps],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def wait_for(process: subprocess.Popen, word: str, timeout_s: float = 120.0) -> None:
    """Block until the process prints `word` on a line of its own; fail with its stderr otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = process.stdout.readline() if ready else ""
        if line.strip() == word:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"writer never printed {word!r}: {process.communicate()[1][-3000:]}")


def sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def fresh_home(ingested_world, tmp_path: Path) -> tuple[Path, Store]:
    """The session world's landing zone copied to a home with an empty warehouse."""
    home = tmp_path / "home"
    shutil.copytree(ingested_world.landing, home / "landing")
    return home, Store(home / "warehouse" / "crossfade.duckdb", lock_timeout_s=30)


# --- stub LLM endpoints -----------------------------------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    mode = "invalid_json"
    delay_s = 0.0
    seen_headers: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen_headers.append(dict(self.headers))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.mode == "echo_401":
            # a misbehaving proxy that puts the request's headers in its error page
            self._reply(401, json.dumps({"error": "unauthorized", "headers": dict(self.headers)}))
        elif self.mode == "echo_200":
            # an endpoint that answers with the request's headers as the completion
            self._reply(200, json.dumps({"choices": [{"message": {"content": json.dumps(dict(self.headers))},
                                                      "finish_reason": "stop"}]}))
        elif self.mode == "status_500":
            self._reply(500, "internal error")
        else:
            content = "this is not JSON {" if self.mode == "invalid_json" else "{}"
            self._reply(200, json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 5}}))

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first: what the slow stub is for

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def llm_stub(mode: str, delay_s: float = 0.0) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A local OpenAI-compatible endpoint: 'invalid_json', 'slow' (delay_s), 'status_500', 'echo_401' or 'echo_200'.

    Yields the base URL and the list of request headers it received.
    """
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Stub,), {"mode": mode, "delay_s": delay_s, "seen_headers": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """An address where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
