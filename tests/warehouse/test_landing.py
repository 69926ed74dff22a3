"""The landing zone readers: file names to formats, partition keys, fingerprints, and staging of every format."""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import pytest

from warehouse import landing


def _stage(*paths: Path, columns: tuple[str, ...] = landing.EVENT_COLUMNS) -> list[dict]:
    """Stage files the way ingestion does and return the staged records in file, then line, order."""
    con = duckdb.connect()
    text_columns = ", ".join(f'"{column}" varchar' for column in columns)
    con.execute(f"create table stage (source_file varchar, source_line bigint, raw_record varchar, parse_error varchar, {text_columns})")
    for path in paths:
        entry = landing.file_format(path)
        assert entry is not None
        landing.stage_file(con, entry, columns, "stage")
    frame = con.execute("select * from stage order by source_file, source_line").pl()
    con.close()
    return frame.to_dicts()


@pytest.mark.parametrize(("name", "fmt", "compressed"), [
    ("part-0.jsonl", "jsonl", False),
    ("part-0.json", "jsonl", False),
    ("part-0.csv", "csv", False),
    ("part-0.parquet", "parquet", False),
    ("part-0.jsonl.gz", "jsonl", True),
    ("part-0.csv.gz", "csv", True),
    ("PART-0.CSV", "csv", False),
])
def test_file_format_from_name(name: str, fmt: str, compressed: bool) -> None:
    assert landing.file_format(Path("/x") / name) == landing.LandingFile(Path("/x") / name, fmt, compressed)


@pytest.mark.parametrize("name", ["_SUCCESS", "_started.jsonl", ".part-0.jsonl.crc", ".hidden.csv"])
def test_marker_and_hidden_files_are_not_data(name: str) -> None:
    assert landing.file_format(Path(name)) is None


@pytest.mark.parametrize("name", ["part-0.txt", "part-0.parquet.gz", "part-0", "part-0.xlsx"])
def test_unsupported_file_types_are_refused_by_name(name: str) -> None:
    with pytest.raises(landing.LandingError, match=name.replace(".", r"\.")):
        landing.file_format(Path(name))


def test_data_files_are_sorted_by_name_without_markers(tmp_path: Path) -> None:
    for name in ("b.csv", "_SUCCESS", "a.parquet", "c.jsonl.gz", ".tmp"):
        (tmp_path / name).write_text("")
    (tmp_path / "nested.jsonl").mkdir()  # a folder is never a data file, whatever its name
    assert [entry.path.name for entry in landing.data_files(tmp_path)] == ["a.parquet", "b.csv", "c.jsonl.gz"]
    assert landing.data_files(tmp_path / "missing") == []


def test_partition_key_is_a_calendar_date() -> None:
    assert landing.parse_partition("2026-11-01") == dt.date(2026, 11, 1)


@pytest.mark.parametrize("key", [
    "../2026-11-01", "2026-11-01/..", "..", "../../etc/passwd", "/tmp", "date=2026-11-01",
    "2026-11-01\n", "2026-11-1", "2026-13-01", "2026-02-30", "", "2026-11-01/../../x",
])
def test_partition_keys_that_are_not_dates_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(landing.LandingError, match="partition key"):
        landing.parse_partition(key)
    with pytest.raises(landing.LandingError):
        landing.event_partition_dir(tmp_path, key)


def test_event_partition_dir_stays_inside_the_landing_zone(tmp_path: Path) -> None:
    folder = landing.event_partition_dir(tmp_path, "2026-11-01")
    assert folder == tmp_path / "events" / "date=2026-11-01"


def test_event_partitions_lists_date_folders_oldest_first(tmp_path: Path) -> None:
    for name in ("date=2026-11-02", "date=2026-10-31", "date=junk", "date=2026-02-30x", "other"):
        (tmp_path / "events" / name).mkdir(parents=True)
    (tmp_path / "events" / "date=2026-11-03").write_text("a file, not a partition")
    assert landing.event_partitions(tmp_path) == ["2026-10-31", "2026-11-02"]
    assert landing.event_partitions(tmp_path / "nowhere") == []


def test_fingerprint_changes_when_files_change(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"event_id": "e1"}\n')
    before = landing.fingerprint(landing.data_files(tmp_path))
    assert landing.fingerprint(landing.data_files(tmp_path)) == before
    (tmp_path / "a.jsonl").write_text('{"event_id": "e1"}\n{"event_id": "e2"}\n')
    rewritten = landing.fingerprint(landing.data_files(tmp_path))
    assert rewritten != before
    (tmp_path / "b.csv").write_text("event_id\n")
    assert landing.fingerprint(landing.data_files(tmp_path)) not in (before, rewritten)
    stat = (tmp_path / "b.csv").stat()
    os.utime(tmp_path / "b.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert landing.fingerprint(landing.data_files(tmp_path)) != rewritten


ROWS = [
    {"event_id": "e1", "user_id": "u1", "item_id": "p1", "ts": "2026-11-01T08:00:00Z", "event_type": "play",
     "ms_played": 60000, "context": "home", "country": "SE"},
    {"event_id": "e2", "user_id": "u2", "item_id": "a1", "ts": "2026-10-31T23:59:59Z", "event_type": "save",
     "ms_played": 0, "context": "search, then library", "country": None},
]


@pytest.mark.parametrize("name", [
    "e.jsonl", "e.csv", "e.parquet", "e.jsonl.gz", "e.csv.gz", "bom.jsonl", "bom.csv", "bom.jsonl.gz", "bom.csv.gz",
])
def test_every_format_stages_the_same_text(hand_landing, name: str) -> None:
    path = hand_landing.write(name, ROWS, bom=name.startswith("bom"))  # Windows tools start text with a BOM
    staged = _stage(path)
    values = [{column: row[column] for column in landing.EVENT_COLUMNS} for row in staged]
    # Everything is text; an empty CSV cell and a JSON null both stage as null.
    assert values == [{key: None if value is None else str(value) for key, value in row.items()} for row in ROWS]
    assert all(row["parse_error"] is None for row in staged)
    header_lines = 1 if ".csv" in name else 0
    expected_lines = [1, 2] if name.endswith(".parquet") else [1 + header_lines, 2 + header_lines]
    assert [row["source_line"] for row in staged] == expected_lines


def test_broken_json_lines_keep_their_text_and_line(hand_landing) -> None:
    good = json.dumps(ROWS[0])
    path = hand_landing.write_lines("e.jsonl", [good, good[:25], "", "[1, 2]", json.dumps(ROWS[1])])
    staged = _stage(path)
    assert [(row["source_line"], row["parse_error"]) for row in staged] == [
        (1, None), (2, "broken_line"), (4, "broken_line"), (5, None),
    ]
    assert staged[1]["raw_record"] == good[:25]
    assert staged[3]["event_id"] == "e2"


def test_broken_csv_lines_keep_their_line_numbers(hand_landing) -> None:
    header = ",".join(landing.EVENT_COLUMNS)
    good = ["e1,u1,p1,2026-11-01T08:00:00Z,play,60000,home,SE", "e2,u1,p1,2026-11-01T09:00:00Z,skip,0,home,SE"]
    path = hand_landing.write_lines("e.csv", [header, good[0], good[0] + ",unexpected", "e9,u1,p1", good[1]])
    staged = _stage(path)
    by_line = {row["source_line"]: row for row in staged}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert by_line[2]["event_id"] == "e1" and by_line[2]["parse_error"] is None
    assert by_line[5]["event_id"] == "e2" and by_line[5]["parse_error"] is None
    assert by_line[3]["parse_error"].startswith("broken_line")
    assert by_line[4]["parse_error"].startswith("broken_line")


def test_a_file_missing_most_columns_is_flagged_wrong_schema(hand_landing) -> None:
    path = hand_landing.write("e.csv", [{"event_id": "e1", "user_id": "u1"}])
    (row,) = _stage(path)
    assert row["parse_error"].startswith("wrong_schema")
    assert "ts" in row["parse_error"]


def test_parquet_lists_stage_as_json_text(hand_landing) -> None:
    path = hand_landing.write("i.parquet", [{"item_id": "p1", "genres": ["true crime", "history"]}])
    (row,) = _stage(path, columns=("item_id", "genres"))
    assert json.loads(row["genres"]) == ["true crime", "history"]
