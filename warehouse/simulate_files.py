"""Sample-world event files: defect injection and writers for JSON lines, CSV and Parquet, gzip or not."""
import gzip
import pathlib

import numpy as np
import polars as pl

from warehouse.simulate_catalog import ID_PREFIXES

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "user_id", "item_id", "ts", "event_type", "ms_played", "context", "country",
)
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "jsonl.gz", "csv.gz", "parquet")
DEFECT_KINDS: tuple[str, ...] = (
    "broken_line", "missing_field", "unknown_item", "negative_ms_played", "future_timestamp",
    "bad_event_type", "exact_duplicate", "late_event",
)
CORRUPTIONS = DEFECT_KINDS[:6]  # rows a reader must reject; the last two are readable
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "item_id", "ts")
BAD_EVENT_TYPES: tuple[str, ...] = ("stream", "like", "share", "download")
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
LATER_DUPLICATE = 0.3  # share of duplicate copies that land in the next arrival day's file
GZIP_LEVEL = 1  # fast; the files exist to be read back, not archived
DAY_US = 86_400_000_000


def corrupt(
    frame: pl.DataFrame, fmt: str, rate: float, arrival_day: int, item_counts: list[int],
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Make about rate of the rows bad, labelled in _defect; returns (file rows, copies for tomorrow).

    Only fresh rows (on time, not copies) are touched. Each corrupted row carries exactly one
    defect, so a reader's rejection reasons can be checked kind by kind. Two of the eight kinds,
    exact duplicates and late events, stay readable: duplicates are drawn here, late events earlier.
    """
    n = frame.height
    kinds = CORRUPTIONS if not fmt.startswith("parquet") else CORRUPTIONS[1:]  # parquet cannot break
    share = rate * len(CORRUPTIONS) / len(DEFECT_KINDS)
    u = rng.random(n)
    fresh = frame["_fresh"].to_numpy()
    bad = fresh & (u < share)
    kind = np.where(bad, np.minimum((u / share * len(kinds)).astype(np.int64), len(kinds) - 1), -1)
    label = np.full(n, None, dtype=object)
    label[bad] = np.array(kinds, dtype=object)[kind[bad]]
    is_kind = {k: label == k for k in CORRUPTIONS}

    field = rng.integers(0, len(REQUIRED_FIELDS), size=n)
    type_code = frame["_type"].to_numpy().astype(np.int64)
    ghost = np.array(item_counts)[type_code] + 1 + rng.integers(0, 100_000, size=n)
    ghost_id = pl.Series(ID_PREFIXES).gather(type_code) + "_" + pl.Series(ghost).cast(pl.String).str.zfill(6)
    future_us = (arrival_day + 1) * DAY_US + rng.integers(3_600_000_000, 60 * DAY_US, size=n)
    columns = {
        **{
            name: pl.when(pl.Series(is_kind["missing_field"] & (field == i))).then(None).otherwise(pl.col(name))
            for i, name in enumerate(REQUIRED_FIELDS)
        },
        "_defect": pl.coalesce(pl.Series(label, dtype=pl.String), pl.col("_defect")),
    }
    frame = frame.with_columns(**columns).with_columns(
        item_id=pl.when(pl.Series(is_kind["unknown_item"])).then(ghost_id).otherwise("item_id"),
        ms_played=pl.when(pl.Series(is_kind["negative_ms_played"]))
        .then(pl.Series(-rng.integers(1, 600_000, size=n)))
        .otherwise("ms_played"),
        ts=pl.when(pl.Series(is_kind["future_timestamp"]))
        .then(pl.Series(future_us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        .otherwise("ts"),
        event_type=pl.when(pl.Series(is_kind["bad_event_type"]))
        .then(pl.Series(BAD_EVENT_TYPES).gather(rng.integers(0, len(BAD_EVENT_TYPES), size=n)))
        .otherwise("event_type"),
    )
    duplicate_share = rate / len(DEFECT_KINDS)
    copied = pl.Series(fresh & ~bad & (rng.random(n) < duplicate_share))
    copies = frame.filter(copied).with_columns(_defect=pl.lit("exact_duplicate"), _fresh=pl.lit(False))
    later = pl.Series(rng.random(copies.height) < LATER_DUPLICATE)
    return pl.concat([frame, copies.filter(~later)]), copies.filter(later)


def write_events(frame: pl.DataFrame, path: pathlib.Path, fmt: str, rng: np.random.Generator) -> None:
    """Write the public columns; rows labelled broken_line become truncated or mis-sized lines."""
    if fmt == "parquet":
        frame.select(EVENT_COLUMNS).write_parquet(path)
        return
    n = frame.height
    cut = pl.Series(rng.uniform(0.2, 0.9, size=n))
    broken = pl.col("_defect") == "broken_line"
    text = frame.with_columns(pl.col("ts").dt.strftime(TS_FORMAT))
    if fmt.startswith("jsonl"):
        line = pl.struct(EVENT_COLUMNS).struct.json_encode()
        # a prefix of a JSON object is never valid JSON
        line = pl.when(broken).then(line.str.slice(0, (line.str.len_bytes() * cut).cast(pl.Int64))).otherwise(line)
        header = ""
    else:
        line = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in EVENT_COLUMNS], separator=",")
        # half the broken CSV lines gain a column, half lose three
        line = (
            pl.when(broken & (cut < 0.55)).then(line + ",unexpected")
            .when(broken).then(line.str.split(",").list.head(len(EVENT_COLUMNS) - 3).list.join(","))
            .otherwise(line)
        )
        header = ",".join(EVENT_COLUMNS) + "\n"
    body = text.select(line.str.join("\n")).item()
    data = (header + body + ("\n" if n else "")).encode()
    if fmt.endswith(".gz"):
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    path.write_bytes(data)
