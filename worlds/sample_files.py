"""Sample-world event files: defect injection and writers for JSON lines, CSV and Parquet, gzip or not."""
import gzip
import io
import pathlib

import numpy as np
import polars as pl

from worlds.sample_catalog import ID_PREFIXES

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
    kind = np.full(n, -1)
    kind[bad] = np.minimum((u[bad] / share * len(kinds)).astype(np.int64), len(kinds) - 1)
    is_kind = {k: kind == kinds.index(k) if k in kinds else np.zeros(n, dtype=bool) for k in CORRUPTIONS}
    label = pl.when(pl.Series(bad)).then(pl.Series(kinds).gather(np.maximum(kind, 0)))

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
        "_defect": pl.coalesce(label, pl.col("_defect")),
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
    text = frame.with_columns(pl.col("ts").dt.strftime(TS_FORMAT))
    if fmt.startswith("jsonl"):
        line, header = pl.struct(EVENT_COLUMNS).struct.json_encode(), b""
    else:
        line = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in EVENT_COLUMNS], separator=",")
        header = (",".join(EVENT_COLUMNS) + "\n").encode()
    lines = text.select(line.alias("line")).to_series()
    broken = np.flatnonzero((frame["_defect"] == "broken_line").fill_null(False).to_numpy())
    if len(broken):
        lines = lines.scatter(broken, _break(lines.gather(broken), fmt, rng))
    buffer = io.BytesIO()
    buffer.write(header)
    # one pre-built column written unquoted is exactly one line per row
    lines.to_frame().write_csv(buffer, include_header=False, quote_style="never")
    data = buffer.getvalue()
    if fmt.endswith(".gz"):
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    path.write_bytes(data)


def _break(lines: pl.Series, fmt: str, rng: np.random.Generator) -> pl.Series:
    """JSON lines lose their tail (a prefix of a JSON object is never valid JSON); CSV lines gain
    one column or lose three."""
    cut = pl.Series(rng.uniform(0.2, 0.9, size=len(lines)))
    frame = pl.DataFrame({"line": lines, "cut": cut})
    line = pl.col("line")
    if fmt.startswith("jsonl"):
        broken = line.str.slice(0, (line.str.len_bytes() * pl.col("cut")).cast(pl.Int64))
    else:
        broken = (
            pl.when(pl.col("cut") < 0.55).then(line + ",unexpected")
            .otherwise(line.str.split(",").list.head(len(EVENT_COLUMNS) - 3).list.join(","))
        )
    return frame.select(broken.alias("line")).to_series()
