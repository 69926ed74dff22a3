"""Write, audit, publish through `crossfade run`: a failed gate leaves readers where they were, and says so.

A healthy world runs end to end; then each stage's gate is made to fail. Raw and features fail on new
data (a landing partition of broken lines for raw.events, a catalogue-coverage floor no world meets for
features.item_stats); enrich, models, eval and serving fail on their own output broken as a bug would
break it. `crossfade sql` must answer exactly as before that run, the summary must name the stage as not
published, and the next run, with the input or the code fixed, publishes.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from pipelines.cli import main
from warehouse import landing
from warehouse.store import Store
from worlds import shapes
from tests.worlds.test_world_matrix import SHAPES, Ran, digest, refusing_endpoint, run_world  # noqa: F401 (fixture)

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


@pytest.fixture
def healthy(crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
            capsys: pytest.CaptureFixture) -> Ran:
    """A world run end to end, every gate passed and published."""
    ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys)
    assert ran.code == 0, digest(ran.out)
    assert ran.store.pending_stages() == {}
    return ran


@pytest.mark.slow
def test_a_failed_gate_keeps_readers_on_the_last_publish_and_the_fixed_retry_publishes(
        healthy: Ran, crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    store = healthy.store
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


# What readers see of each later stage's table, and a fault that makes its stage write bad rows: the gate must
# stop them. Each fault breaks the stage's own output the way a bug would (vectors off the unit sphere, NaN
# item vectors, metrics above 1, a user's list written twice); the stage runs alone with `--select`.
STAGE_QUERIES = {
    "enrich.text_embeddings": "select count(*) as n, round(sum(list_sum(list_transform(embedding, v -> v * v))), 2) "
                              "as squares from enrich.text_embeddings",
    "models.hgnn_item_embeddings": "select model_version, count(*) as n from models.hgnn_item_embeddings "
                                   "group by all order by all",
    "eval.offline_metrics": "select count(*) as n, round(sum(value), 6) as total, max(model_version) as version "
                            "from eval.offline_metrics",
    "serving.candidates": "select count(*) as n, count(distinct user_id) as users, max(as_of) as as_of, "
                          "max(model_version) as version from serving.candidates",
}


def stage_answers(capsys: pytest.CaptureFixture) -> dict[str, str]:
    capsys.readouterr()
    printed = {}
    for table, query in {**QUERIES, **STAGE_QUERIES}.items():
        assert main(["sql", query, "--format", "csv"]) == 0
        printed[table] = capsys.readouterr().out
    return printed


def off_the_sphere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text encoded again (stored hashes ignored), each vector of length 2."""
    import dataclasses

    from assets import enrich

    encode = enrich.embed_changed

    def encode_all_twice_as_long(encoder, ids, texts, hashes, **kwargs):  # noqa: ANN001, ANN003, ANN202
        result = encode(encoder, ids, texts, {}, **kwargs)
        return dataclasses.replace(result, embeddings=2 * result.embeddings)

    monkeypatch.setattr(enrich, "embed_changed", encode_all_twice_as_long)


def nan_item_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from models import hgnn

    train = hgnn.train
    monkeypatch.setattr(hgnn, "train", lambda *args, **kwargs: (lambda result: dataclasses.replace(
        result, embeddings=result.embeddings * float("nan")))(train(*args, **kwargs)))


def metrics_above_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    from models import protocol

    with_validation = protocol.with_validation
    monkeypatch.setattr(protocol, "with_validation", lambda *args: with_validation(*args).with_columns(
        pl.col("value") * 3 + 1))


def lists_written_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    from assets import serving

    generate = serving.generate
    monkeypatch.setattr(serving, "generate", lambda *args, **kwargs: (
        pl.concat([chunk, chunk]) for chunk in generate(*args, **kwargs)))


FAULTS = {  # stage: (the fault, the gate that must stop it, the table readers must keep seeing as before)
    "enrich": (off_the_sphere, "enrich_text_embeddings_suite", "enrich.text_embeddings"),
    "models": (nan_item_vectors, "models_hgnn_item_embeddings_suite", "models.hgnn_item_embeddings"),
    "eval": (metrics_above_one, "eval_offline_metrics_suite", "eval.offline_metrics"),
    "serving": (lists_written_twice, "serving_candidates_staging_suite", "serving.candidates_staging"),
}


@pytest.mark.slow
def test_each_later_stage_s_failed_gate_keeps_readers_where_they_were(
        healthy: Ran, crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    store = healthy.store
    before = stage_answers(capsys)
    for stage, (fault, check, table) in FAULTS.items():
        with monkeypatch.context() as patched:
            fault(patched)
            ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys,
                            landed=healthy.world, args=("--select", stage))
        assert ran.code != 0 and re.search(rf"check {check} +FAILED", ran.out), (stage, digest(ran.out))
        assert table in ran.out.split(NOT_PUBLISHED, 1)[1], (stage, digest(ran.out))
        assert table in store.pending_stages(), stage
        assert stage_answers(capsys) == before, stage  # every table, not only the failed stage's

    ran = run_world(SHAPES["no_warm"], crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=healthy.world)
    assert ran.code == 0, digest(ran.out)
    assert store.pending_stages() == {}
    after = stage_answers(capsys)
    assert after["models.hgnn_item_embeddings"] != before["models.hgnn_item_embeddings"]  # a new model, published
    assert after["serving.candidates"].splitlines()[1].split(",")[:3] == \
        before["serving.candidates"].splitlines()[1].split(",")[:3]  # the same users and as-of, lists re-served
