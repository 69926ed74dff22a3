"""The landing zone readers: file names to formats, partition keys, fingerprints, and staging of every format."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path

import duckdb
import pytest

from warehouse import landing


def _stage(*paths: Path, columns: tuple[str, ...] = landing.EVENT_COLUMNS) -> list[dict]:
    """Stage files the way ingestion does and return the staged records in file, then line, order."""
    con = duckdb.connect()
    entries = [landing.file_format(path) for path in paths]
    assert None not in entries
    with landing.staged(con, entries, columns, "stage") as view:
        frame = con.execute(f"select * exclude (file_no) from {view} order by file_no, source_line").pl()
    # nothing left behind
    assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]
    assert con.execute("select count(*) from duckdb_variables()").fetchall() == [(0,)]
    con.close()
    return frame.to_dicts()


@pytest.mark.parametrize(("name", "fmt", "compressed"), [
    ("part-0.jsonl", "jsonl", False),
    ("part-0.json", "jsonl", False),
    ("part-0.csv", "csv", False),
    ("part-0.parquet", "parquet", False),
    ("part-0.jsonl.gz", "jsonl", True),
    ("part-0.csv.gz", "csv", True),
    ("part-0.parquet.gz", "parquet", True),
    ("PART-0.CSV", "csv", False),
])
def test_file_format_from_name(name: str, fmt: str, compressed: bool) -> None:
    assert landing.file_format(Path("/x") / name) == landing.LandingFile(Path("/x") / name, fmt, compressed)


@pytest.mark.parametrize("name", ["_SUCCESS", "_started.jsonl", ".part-0.jsonl.crc", ".hidden.csv"])
def test_marker_and_hidden_files_are_not_data(name: str) -> None:
    assert landing.file_format(Path(name)) is None


@pytest.mark.parametrize("name", ["part-0.txt", "part-0", "part-0.xlsx"])
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
    with pytest.warns(landing.LandingWarning) as warned:
        assert landing.event_partitions(tmp_path) == ["2026-10-31", "2026-11-02"]
    assert sorted(Path(str(w.message).split(":")[0]).name for w in warned) == ["date=2026-02-30x", "date=junk"]
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


def test_a_folder_named_for_an_impossible_date_is_skipped_with_a_warning(tmp_path: Path) -> None:
    for name in ("date=2026-02-28", "date=2026-02-30", "date=2026-03-01"):
        (tmp_path / "events" / name).mkdir(parents=True)
    with pytest.warns(landing.LandingWarning, match=r"date=2026-02-30: skipped.*not a calendar date.*rename it"):
        assert landing.event_partitions(tmp_path) == ["2026-02-28", "2026-03-01"]


def test_refused_csv_lines_do_not_shift_the_lines_around_them(hand_landing) -> None:
    header = ",".join(landing.EVENT_COLUMNS)
    good = "e{n},u1,p1,2026-11-01T08:00:00Z,play,1,home,SE"
    lines = [header, "short,row", good.format(n=1), "x,y", "too,many,columns,a,b,c,d,e,f", good.format(n=2),
             good.format(n=3), "last,bad"]
    staged = _stage(hand_landing.write_lines("e.csv", lines))
    assert [(row["source_line"], row["event_id"], row["parse_error"] is not None) for row in staged] == [
        (2, None, True), (3, "e1", False), (4, None, True), (5, None, True), (6, "e2", False), (7, "e3", False),
        (8, None, True),
    ]
    assert staged[0]["raw_record"] == "short,row"


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.csv", "e.csv.gz"])
def test_bytes_that_are_not_utf8_refuse_only_their_line(hand_landing, name: str) -> None:
    path = hand_landing.write(name, [ROWS[0], {**ROWS[0], "event_id": "e-latin", "context": "CAFE"}, ROWS[1]])
    text = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    text = text.replace(b"CAFE", "caf\u00e9".encode("latin-1"))
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    staged = _stage(path)
    first = 2 if ".csv" in name else 1
    assert [(row["source_line"], row["event_id"], row["parse_error"]) for row in staged] == [
        (first, "e1", None), (first + 1, None, "broken_line: invalid encoding"), (first + 2, "e2", None),
    ]
    assert "caf" in staged[1]["raw_record"]


def test_json_lines_of_another_schema_say_which_columns_are_missing_and_unexpected(hand_landing) -> None:
    all_null = dict.fromkeys(landing.EVENT_COLUMNS)  # every key present: missing values, not another schema
    path = hand_landing.write("e.jsonl", [{"song": "s1", "listener": "x", "when": "today"}, all_null, ROWS[0]])
    staged = _stage(path)
    assert [row["parse_error"] for row in staged] == [
        "wrong_schema: missing columns event_id, user_id, item_id, ts, event_type, ms_played, context, country; "
        "unexpected columns song, listener, when",
        None, None,
    ]
    assert json.loads(staged[0]["raw_record"]) == {"song": "s1", "listener": "x", "when": "today"}


@pytest.mark.parametrize("name", ["e.csv", "e.parquet"])
def test_a_file_of_another_schema_keeps_each_row_as_read(hand_landing, name: str) -> None:
    path = hand_landing.write(name, [{"song": "s1", "listener": "x"}, {"song": "s2", "listener": "y"}])
    staged = _stage(path)
    assert {row["parse_error"] for row in staged} == {
        "wrong_schema: missing columns event_id, user_id, item_id, ts, event_type, ms_played, context, country; "
        "unexpected columns song, listener"
    }
    raw = [row["raw_record"] for row in staged]
    assert raw == (["s1,x", "s2,y"] if name.endswith(".csv") else ['{"song":"s1","listener":"x"}', '{"song":"s2","listener":"y"}'])


@pytest.mark.parametrize(("name", "content"), [
    ("e.csv", b""), ("e.csv.gz", gzip.compress(b"", mtime=0)), ("e.jsonl", b""), ("e.jsonl.gz", gzip.compress(b"", mtime=0)),
    ("header.csv", ",".join(landing.EVENT_COLUMNS).encode() + b"\n"), ("blank.jsonl", b"\n  \n\n"),
])
def test_files_without_records_stage_nothing(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    assert _stage(tmp_path / name) == []


def _good_and_torn(hand_landing, name: str) -> tuple[Path, Path]:
    """A good JSON-lines file and a file `name` cut to half its size, as an interrupted copy leaves it."""
    good = hand_landing.write("a.jsonl", ROWS)
    path = hand_landing.write(name, ROWS * 50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return good, path


TORN = ["e.parquet", "e.jsonl.gz", "e.csv.gz", "e.parquet.gz"]


@pytest.mark.parametrize("name", TORN)
def test_an_unreadable_file_is_named_and_leaves_nothing_behind(hand_landing, name: str) -> None:
    good, path = _good_and_torn(hand_landing, name)
    con = duckdb.connect()
    entries = [landing.file_format(good), landing.file_format(path)]
    with pytest.raises(landing.LandingError, match=rf"{path}: cannot be read as .*replace or remove the file"):
        with landing.staged(con, entries, landing.EVENT_COLUMNS, "stage"):
            pass
    assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]
    assert con.execute("select count(*) from duckdb_views() where temporary and view_name = 'stage'").fetchall() == [(0,)]
    assert con.execute("select count(*) from duckdb_variables()").fetchall() == [(0,)]


@pytest.mark.parametrize("name", TORN)
def test_with_a_quarantine_an_unreadable_file_is_left_out_and_the_others_stage(hand_landing, name: str) -> None:
    good, path = _good_and_torn(hand_landing, name)
    con = duckdb.connect()
    quarantine: list[landing.QuarantinedFile] = []
    with landing.staged(con, [landing.file_format(path), landing.file_format(good)], landing.EVENT_COLUMNS, "stage",
                        quarantine) as view:
        staged = con.execute(f"select file_no, event_id from {view} order by source_line").fetchall()
    assert staged == [(1, row["event_id"]) for row in ROWS]  # file_no keeps the place the file was given
    assert [(q.path, q.size_bytes, q.reason.split(":")[0]) for q in quarantine] == [
        (path, path.stat().st_size, "unreadable")
    ]
    assert landing.read_error(con, landing.file_format(path), landing.EVENT_COLUMNS) == quarantine[0].reason
    assert landing.read_error(con, landing.file_format(good), landing.EVENT_COLUMNS) is None
    assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]
    assert con.execute("select count(*) from duckdb_variables()").fetchall() == [(0,)]


def test_files_stage_in_the_order_given_with_their_names(hand_landing) -> None:
    paths = [hand_landing.write(name, [ROWS[0]]) for name in ("b.parquet", "a.csv", "c.jsonl")]
    staged = _stage(*paths)
    assert [(Path(row["source_file"]).name, row["event_id"]) for row in staged] == [
        ("b.parquet", "e1"), ("a.csv", "e1"), ("c.jsonl", "e1"),
    ]


def test_gzipped_parquet_stages_like_plain_parquet(tmp_path: Path) -> None:
    import polars as pl

    rows = {"event_id": ["e1", "e2"], "user_id": ["u1", "u2"], "item_id": ["a1", "p1"],
            "ts": ["2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z"], "event_type": ["play", "save"],
            "ms_played": [1000, 0], "context": ["home", "search"], "country": ["SE", "FR"]}
    plain = tmp_path / "part-0.parquet"
    pl.DataFrame(rows).write_parquet(plain)
    packed = tmp_path / "part-1.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    staged_plain, staged_packed = _stage(plain), _stage(packed)
    assert [{**row, "source_file": None} for row in staged_packed] == [{**row, "source_file": None} for row in staged_plain]
    assert {row["source_file"] for row in staged_packed} == {str(packed)}
    torn = tmp_path / "part-2.parquet.gz"
    torn.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    quarantine: list[landing.QuarantinedFile] = []
    with landing.staged(duckdb.connect(), [landing.file_format(torn)], landing.EVENT_COLUMNS, "stage", quarantine):
        pass
    assert [(q.path, q.fmt, q.reason.split(":")[0]) for q in quarantine] == [(torn, "parquet.gz", "unreadable")]

