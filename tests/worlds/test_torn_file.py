"""A torn .jsonl.gz among many arrival partitions: the night goes on, the file is quarantined by name,
and once the file is replaced its rows are stored exactly once."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.worlds.test_world_matrix import SHAPES, refusing_endpoint, run_world  # noqa: F401 (a fixture)
from worlds import shapes

pytestmark = pytest.mark.slow


def test_a_torn_gzip_is_quarantined_the_night_publishes_and_the_replaced_file_counts_once(
        crossfade_home: Path, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    shape = SHAPES["silent_podcasts"]  # a world whose model passes the promotion gate, so candidates publish
    world = shapes.write(shapes.build(shape), crossfade_home / "landing")
    torn = sorted((crossfade_home / "landing" / "events").glob("date=*/part-0.jsonl.gz"))[len(world.files) // 12]
    intact = torn.read_bytes()
    rows_in_torn = len(gzip.decompress(intact).decode().splitlines())
    torn.write_bytes(intact[: len(intact) // 2])  # cut mid-stream, as an interrupted copy leaves it

    first = run_world(shape, crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=world)
    assert first.code == 0, first.out[-4000:]
    assert "quarantined landing files" in first.out and str(torn) in first.out
    with first.store.read() as con:
        quarantined = con.execute("select source_file, split_part(reason, ':', 1) from raw.quarantined_files").fetchall()
        stored, candidates = con.execute("select (select count(*) from raw.events), "
                                         "(select count(*) from serving.candidates)").fetchone()
    assert quarantined == [(str(torn), "unreadable")]
    assert stored == world.distinct_event_ids - rows_in_torn and candidates > 0  # every other file was stored

    torn.write_bytes(intact)  # the file replaced by a whole copy; the next night picks the partition up again
    second = run_world(shape, crossfade_home, refusing_endpoint, monkeypatch, capsys, landed=world)
    assert second.code == 0, second.out[-4000:]
    with second.store.read() as con:
        stored, distinct, from_file, quarantined = con.execute(
            "select count(*), count(distinct event_id), count(*) filter (where source_file = $f), "
            "(select count(*) from raw.quarantined_files) from raw.events", {"f": str(torn)}).fetchone()
    assert (stored, distinct, from_file, quarantined) == (world.distinct_event_ids, world.distinct_event_ids,
                                                          rows_in_torn, 0)
