"""The world matrix: every shape of landing zone through `crossfade run`, its outcome, and nothing lost.

Each world of worlds.shapes runs end to end with the real assets and gates. The outcome is either a
completed run whose degradation is flagged and explained, or a stop at a gate whose reason is in
words; a Python error from crossfade's own code fails the test. Every event row written must be in
raw.events or raw.rejected_events, or counted as a duplicate.

The LLM endpoint is a local server that refuses every request at once: the enrichment and judge steps
then defer their work (status pending, as when an endpoint is down), which keeps a world to seconds
(the bundled SmolLM2 spends about 25 s of a 2-core machine on each world's few calls). The shapes are
about the data; the LLM paths have their own tests.
"""
from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.cli import main
from warehouse.store import Store
from worlds import shapes

SHAPES = {shape.name: shape for shape in shapes.shapes()}


@dataclass(frozen=True)
class Outcome:
    """What a world's run must end with: candidates published, or a stop at `gate` saying `words`."""

    published: bool
    gate: str | None = None  # the blocking check that stopped the run
    words: tuple[str, ...] = ()  # phrases the run's output must hold (the reason, the degradation)
    gate_slice: str | None = None  # the slice the promotion gate compared on, as registered
    empty_slices: tuple[str, ...] = ()  # slices the registered metrics report without users


FALLBACK = "compared on all users"
OUTCOMES = {
    # degraded: the gate compares on all users, and the registry row and the log say why
    "no_cold_targets": Outcome(True, words=("cold slice has 0 users", FALLBACK), gate_slice="all",
                               empty_slices=("cold",)),
    # degraded: trained on podcast labels alone; every user is cold, so the cold slice is the gate's
    "no_warm": Outcome(True, gate_slice="cold", empty_slices=("warm",)),
    "no_holdout_targets": Outcome(False, "models_two_tower_promotion_gate",
                                  ("no user has a target-type event in the validation period",), gate_slice=None,
                                  empty_slices=("all", "warm", "cold", "long_tail")),
    # the one holdout target of each warm user is a head item and validation has none: nothing to choose on
    "head_only_targets": Outcome(False, "models_two_tower_promotion_gate",
                                 ("no user has a target-type event in the validation period",), gate_slice=None,
                                 empty_slices=("all", "warm", "cold", "long_tail")),
    # 24 users: the 6 cold users who convert during validation are fewer than the gate's 10
    "silent_podcasts": Outcome(True, words=(FALLBACK,), gate_slice="all"),
    # one warm user: the plan serves what validated best for that one user
    "single_user": Outcome(True, words=(FALLBACK + " (1)",), gate_slice="all", empty_slices=("cold",)),
    "one_day": Outcome(False, "features_interactions_suite", ("count_train_period_interactions",)),
    "foreign_export": Outcome(True, words=(FALLBACK,), gate_slice="all"),
}


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = b'{"error": {"message": "no model is loaded on this test endpoint"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@dataclass
class Ran:
    code: int
    out: str
    world: shapes.World
    store: Store
    seconds: float


def run_world(shape: shapes.Shape, home: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture, landed: shapes.World | None = None, args: tuple[str, ...] = ()) -> Ran:
    """`crossfade run [args]` on the landing zone of `shape` under CROSSFADE_HOME (written first unless `landed`)."""
    world = landed or shapes.write(shapes.build(shape), home / "landing")
    for name, value in {"CROSSFADE_LLM_BACKEND": "http", "CROSSFADE_LLM_BASE_URL": endpoint,
                        "CROSSFADE_LLM_MODEL": "refusing", "CROSSFADE_LLM_CALL_BUDGET": "1",
                        "CROSSFADE_JUDGE_USERS": "2", "CROSSFADE_JUDGE_PANEL_USERS": "2",
                        "CROSSFADE_JUDGE_PAIRWISE_PANEL_USERS": "1",
                        # a world of tens of users has days of 9 events beside days of 14; the volume gate
                        # (partition vs trailing median) is for platforms, and has its own tests
                        "CROSSFADE_VOLUME_TOLERANCE": "1.0"}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    started = time.perf_counter()
    code = main(["run", *args])
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    return Ran(code, captured.out + captured.err, world, Store(home / "warehouse" / "crossfade.duckdb"), seconds)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
def test_world(name: str, crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture) -> None:
    expected = OUTCOMES[name]
    ran = run_world(SHAPES[name], crossfade_home, refusing_endpoint, monkeypatch, capsys)
    print(f"{name}: exit {ran.code} in {ran.seconds:.1f} s")  # the matrix's timing, with -s or on failure
    assert "Traceback" not in ran.out, digest(ran.out)
    # the runner prints "[hh:mm:ss]   step <key> failed: <error>" for every failed step; only gates may fail
    crashed = [line for line in ran.out.splitlines()
               if line.startswith("[") and "  step " in line and " failed: " in line and "AssetCheckFailed" not in line]
    assert not crashed, (crashed, digest(ran.out))
    assert_nothing_lost(ran)
    with ran.store.read() as con:
        published, unexplained = con.execute(
            "select count(*), count(*) filter (where is_fallback and coalesce(explanation, '') = '') "
            "from serving.candidates").fetchone() if _has(con, "serving", "candidates") else (0, 0)
        registered = con.execute("select status, metrics from models.registry order by created_at desc limit 1"
                                 ).fetchall() if _has(con, "models", "registry") else []
    assert bool(published) == expected.published, digest(ran.out)
    assert unexplained == 0  # a popularity fallback always says why the item is there
    assert (ran.code == 0) == (expected.gate is None), digest(ran.out)
    if expected.gate:
        assert re.search(rf"check {expected.gate} +FAILED", ran.out), digest(ran.out)
    for words in expected.words:
        assert words in ran.out, (words, digest(ran.out))
    if registered:
        status, metrics = registered[0]
        metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
        assert status == ("promoted" if expected.published else "rejected")
        assert metrics["gate"]["slice"] == expected.gate_slice
        assert sorted(metrics["empty_slices"]) == sorted(expected.empty_slices)
    else:
        assert expected.gate is not None and not expected.gate.startswith("models_")


def digest(out: str) -> str:
    """The runner's own lines (steps, verdicts, summary) and gate tables, without Dagster's log lines."""
    keep = [line for line in out.splitlines() if line.startswith(("[", "|", "  ", "E")) and " - dagster - " not in line]
    return "\n".join(keep)[-6000:]


def assert_nothing_lost(ran: Ran) -> None:
    """Every event row written is stored, rejected with a reason, or counted as a duplicate."""
    with ran.store.read() as con:
        stored, rejected = con.execute("select (select count(*) from raw.events), "
                                       "(select count(*) from raw.rejected_events)").fetchone()
        read, duplicates = con.execute("select sum(count_read), sum(count_duplicates) from raw.ingest_log").fetchone()
    assert read == ran.world.event_rows
    assert stored + rejected + duplicates == ran.world.event_rows
    assert stored <= ran.world.distinct_event_ids


def _has(con, schema: str, table: str) -> bool:
    return bool(con.execute("select count(*) from duckdb_tables() where schema_name = $s and table_name = $t",
                            {"s": schema, "t": table}).fetchone()[0])


def _target_events(world: shapes.World, period: str) -> list[dict]:
    start, end = {"train": ("", world.shape.valid_start.isoformat()),
                  "holdout": (world.shape.cut.isoformat(), "9999")}[period]
    return [row for _, row in world.events if row["item_id"].startswith(shapes.TARGET[0])
            and start <= row["ts"] < end]


def test_each_world_has_its_shape(tmp_path: Path) -> None:
    """The generator's answers, checked on the rows it writes (fast: no pipeline)."""
    worlds = {name: shapes.write(shapes.build(shape), tmp_path / name) for name, shape in SHAPES.items()}
    warm = {name: {row["user_id"] for row in _target_events(w, "train")} for name, w in worlds.items()}
    holdout = {name: {row["user_id"] for row in _target_events(w, "holdout")} for name, w in worlds.items()}
    assert holdout["no_cold_targets"] and holdout["no_cold_targets"] <= warm["no_cold_targets"]
    assert not warm["no_warm"] and holdout["no_warm"]
    assert warm["no_holdout_targets"] and not holdout["no_holdout_targets"]
    assert not [row for _, row in worlds["silent_podcasts"].events if row["item_id"].startswith("p")]
    assert any(item["description"] is None and not item["genres"] for item in worlds["silent_podcasts"].items)
    assert len({row["user_id"] for _, row in worlds["single_user"].events}) == 1
    assert len({row["ts"][:10] for _, row in worlds["one_day"].events}) == 1
    export = worlds["foreign_export"]
    assert len({day for day, _ in export.events}) == 1 and len(export.files) == 1  # every event late, one partition
    per_user: dict[str, int] = {}
    for _, row in export.events:
        per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
    assert per_user["u000"] >= export.event_rows / 2 - 5  # one user with about half the events
    assert {u for u in per_user if u.startswith("x")} and not {u["user_id"] for u in export.users} & set(per_user) - {
        u for u in per_user if u.startswith("u")}  # x users have events but no users row
    assert export.distinct_event_ids < export.event_rows  # exact repeats
    suffixes = {Path(path).name.split(".", 1)[1] for w in worlds.values() for path in w.files}
    assert suffixes == set(shapes.EVENT_FORMATS)
    assert (tmp_path / "no_warm" / "items" / "items-1.parquet").is_file()
