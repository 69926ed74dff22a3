"""Write, audit, publish through `crossfade run`: a failed gate leaves readers where they were, and says so.

A healthy world runs end to end; then a stage's gate is made to fail on new data (a landing partition of
broken lines for raw.events, a catalogue-coverage floor no world meets for features.item_stats).
`crossfade sql` must answer exactly as before that run for the failed stage's tables, the summary must
name the stage as not published, and the next run, with the input fixed, publishes.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.cli import main
from warehouse import landing
from warehouse.store import Store
from worlds import shapes
from tests.worlds.test_world_matrix import SHAPES, digest, refusing_endpoint, run_world  # noqa: F401 (fixture)

NOT_PUBLISHED = "not published (the stage's gate"  # the summary's section of stages readers do not see
QUERIES = {
    "raw.events": "select count(*) as n, max(arrival_date) as newest from raw.events",
    "raw.rejected_events": "select count(*) as n from raw.rejected_events",
    "raw.ingest_log": "select count(*) as n, max(arrival_date) as newest from raw.ingest_log",
    "features.item_stats": "select count(*) as n, sum(count_plays) as plays from features.item_stats",
    "features.splits": "select max(end_at) as holdout_end from features.splits",
}


def answers(capsys: pytest.CaptureFixture) -> dict[str, str]:
    """What `crossfade sql` prints for each query, as a reader sees the published state."""
    capsys.readouterr()
    printed = {}
    for table, query in QUERIES.items():
        assert main(["sql", query, "--format", "csv"]) == 0
        printed[table] = capsys.readouterr().out
    return printed


def land_partition(landing: Path, day: dt.date, lines: list[str]) -> Path:
    folder = landing / "events" / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-0.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good_events(world: shapes.World, day: dt.date, count: int) -> list[str]:
    """`count` copies of the world's first event on `day`, each its own event."""
    _, first = world.events[0]
    ts = f"{day.isoformat()}T09:00:00"
    return [json.dumps({**first, "event_id": f"late-{day}-{n}", "ts": ts}) for n in range(count)]


@pytest.mark.slow
def test_a_failed_gate_keeps_readers_on_the_last_publish_and_the_fixed_retry_publishes(
        crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    healthy = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys)
    assert healthy.code == 0, digest(healthy.out)
    store = Store(crossfade_home / "warehouse" / "crossfade.duckdb")
    assert store.pending_stages() == {}
    before = answers(capsys)
    day = dt.date.fromisoformat(landing.event_partitions(crossfade_home / "landing")[-1]) + dt.timedelta(days=1)

    # raw: a new partition mostly of broken lines; its gate fails on the reject rate, nothing of it reaches readers
    broken = land_partition(crossfade_home / "landing", day, good_events(healthy.world, day, 5) + ["{not json"] * 50)
    ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=healthy.world)
    assert ran.code != 0 and "check raw_events_suite" in ran.out and "FAILED" in ran.out, digest(ran.out)
    assert NOT_PUBLISHED in ran.out and "raw.events" in ran.out.split(NOT_PUBLISHED, 1)[1], digest(ran.out)
    assert answers(capsys) == before
    with store.audit() as con:  # the partition's accounting is written, for the gate and for a person to inspect
        assert con.execute("select count(*) from raw.ingest_log where arrival_date = $d",
                           {"d": day}).fetchone()[0] == 1
    assert "raw.events" in store.pending_stages()

    # fixed: the partition's files replaced by good events; the retry publishes them
    broken.write_text("".join(line + "\n" for line in good_events(healthy.world, day, 20)))
    monkeypatch.setenv("CROSSFADE_MIN_CATALOG_COVERAGE", "1.0")  # and now a features gate no world meets
    ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=healthy.world)
    assert "check raw_events_suite" in ran.out and "check features_item_stats_suite" in ran.out, digest(ran.out)
    assert ran.code != 0 and "raw.events" not in store.pending_stages(), digest(ran.out)
    after = answers(capsys)
    assert after["raw.events"] != before["raw.events"] and after["raw.ingest_log"] != before["raw.ingest_log"]
    assert after["features.splits"] != before["features.splits"]  # a passing feature gate published the new as-of
    assert after["features.item_stats"] == before["features.item_stats"]  # the failed one did not
    assert "features.item_stats" in ran.out.split(NOT_PUBLISHED, 1)[1], digest(ran.out)

    monkeypatch.delenv("CROSSFADE_MIN_CATALOG_COVERAGE")
    ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=healthy.world,
                    args=("--select", "features"))
    assert ran.code == 0, digest(ran.out)
    assert "features.item_stats" not in store.pending_stages()
    assert answers(capsys)["features.item_stats"] != before["features.item_stats"]
