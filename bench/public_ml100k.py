"""Benchmark: 2T-HGNN against implicit ALS and Popularity on MovieLens-100K, through crossfade's own stages.

Data: ml-100k as shipped in the `recbole` wheel (recbole/dataset_example/ml-100k/). The first run downloads
that wheel from PyPI with `pip download --no-deps recbole` (network at benchmark time only) and caches
the extracted files under bench/out/ml-100k/; later runs read the cache.

Mapping onto the landing contract (ml-100k has only movies, and the model needs two item types joined
by co-listening, a target type many users have not tried, and cold users):
- item_type 'audiobook' (the target) = movies with a dark genre (Crime, Film-Noir, Horror, Mystery,
  Thriller); every other movie is a 'podcast'. The graph then has audiobook__audiobook,
  audiobook__podcast and podcast__podcast relations, and "cold" users are those who rated no dark
  movie in the train window: can their other ratings find the thrillers they rate next?
- each rating is a 'play' event at its timestamp, ms_played = rating / 5 of a two-hour duration (so
  completion carries the rating); ratings of 4 and 5 add a 'save' (a weak signal).
- title = movie title, description = its genres and year, genres = ml-100k classes, release date =
  1 January of the release year; users get age buckets, country 'US'.
- crossfade.yaml: item types podcast + audiobook, a 180-day window and a 30-day holdout (ml-100k spans
  seven months), as-of = the day after the last rating, min_co_listeners 2.
Every event lands in one arrival partition (late events of earlier days are allowed by the contract).
Ingestion and features run through crossfade's warehouse functions (the raw volume gate is meant for
daily logs, not a one-off export), then the model and evaluation assets are materialised with Dagster;
the figures are read from eval.offline_metrics, where ALS and Popularity share the split and metrics.
"""
from pathlib import Path
import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402
import polars as pl  # noqa: E402
import yaml  # noqa: E402

from assets import evaluation, models  # noqa: E402
from pipelines.resources import Crossfade, Warehouse  # noqa: E402
from pipelines.settings import load_settings  # noqa: E402
from warehouse import ingest  # noqa: E402
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table  # noqa: E402
from warehouse.store import Store  # noqa: E402

CACHE = ROOT / "bench" / "out" / "ml-100k"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
DARK = ["Crime", "Film-Noir", "Horror", "Mystery", "Thriller"]
DURATION_MS = 7_200_000
AGE_BUCKETS = [(18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (200, "55+")]
REPORTED = ("two_tower_hgnn", "als", "popularity", "two_tower", "llm_knn", "hgnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hgnn-epochs", type=int, default=4)
    parser.add_argument("--tt-epochs", type=int, default=10)
    parser.add_argument("--keep", type=Path, default=None, help="use this CROSSFADE_HOME and keep it")
    args = parser.parse_args()
    inter, items, users = load_ml100k()
    with tempfile.TemporaryDirectory(prefix="crossfade-bench-ml100k-") as tmp:
        home = args.keep or Path(tmp) / "home"
        as_of = write_landing(home, inter, items, users)
        started = time.perf_counter()
        prepare(home, as_of)
        os.environ["CROSSFADE_HOME"] = str(home)
        result = dg.materialize(
            [models.models_hgnn_item_embeddings, models.models_two_tower, evaluation.eval_offline_metrics],
            resources={"crossfade": Crossfade(home=str(home)), "warehouse": Warehouse()},
            run_config={"ops": {"models__hgnn_item_embeddings": {"config": {"max_epochs": args.hgnn_epochs}},
                                "models__two_tower": {"config": {"epochs": args.tt_epochs}}}},
        )
        if not result.success:
            raise SystemExit("the model stage failed on ml-100k; see the Dagster log above")
        with Store(load_settings(home=str(home)).database).read() as con:
            metrics = con.sql("select * from eval.offline_metrics").pl()
        report(metrics, time.perf_counter() - started)


def load_ml100k() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(ratings, movies, users) from the cache, filled from the recbole wheel on first use."""
    if not all((CACHE / name).is_file() for name in FILES):
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as wheel_dir:
            print("downloading the recbole wheel from PyPI (pip download --no-deps recbole) for ml-100k", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole", "-d", wheel_dir],
                           check=True)
            wheel = next(Path(wheel_dir).glob("recbole-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for name in FILES:
                    (CACHE / name).write_bytes(archive.read(f"recbole/dataset_example/ml-100k/{name}"))
    def read(name: str) -> pl.DataFrame:
        frame = pl.read_csv(CACHE / name, separator="\t", quote_char=None, infer_schema=False)
        return frame.rename({c: c.split(":")[0] for c in frame.columns})
    return read("ml-100k.inter"), read("ml-100k.item"), read("ml-100k.user")


def write_landing(home: Path, inter: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> dt.date:
    """The landing zone and crossfade.yaml under `home`; returns the as-of date."""
    ratings = inter.select(
        pl.col("user_id"), pl.col("item_id"), pl.col("rating").cast(pl.Float64),
        pl.from_epoch(pl.col("timestamp").cast(pl.Float64).cast(pl.Int64), time_unit="s")
        .dt.replace_time_zone("UTC").alias("ts"))
    plays = ratings.select("user_id", "item_id", "ts", event_type=pl.lit("play"),
                           ms_played=(pl.col("rating") / 5 * DURATION_MS).cast(pl.Int64))
    saves = ratings.filter(pl.col("rating") >= 4).select("user_id", "item_id", "ts", event_type=pl.lit("save"),
                                                         ms_played=pl.lit(0, pl.Int64))
    events = (pl.concat([plays, saves]).sort("ts", "user_id", "item_id", "event_type")
              .with_row_index("n")
              .select(pl.format("ml{}", "n").alias("event_id"), pl.format("u{}", "user_id").alias("user_id"),
                      pl.format("m{}", "item_id").alias("item_id"), "ts", "event_type", "ms_played",
                      context=pl.lit("home"), country=pl.lit("US")))
    last_day = events["ts"].max().date()
    folder = home / "landing" / "events" / f"date={last_day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    events.write_parquet(folder / "part-0.parquet")

    genres = pl.col("class").fill_null("").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    year = pl.col("release_year").cast(pl.Int32, strict=False)
    catalogue = items.select(
        pl.format("m{}", "item_id").alias("item_id"),
        pl.when(genres.list.eval(pl.element().is_in(DARK)).list.any()).then(pl.lit("audiobook"))
        .otherwise(pl.lit("podcast")).alias("item_type"),
        pl.col("movie_title").alias("title"),
        pl.concat_str([pl.col("class").fill_null(""), pl.col("release_year").fill_null("")], separator=" ")
        .alias("description"),
        creator=pl.lit("unknown"), language=pl.lit("en"), genres=genres, duration_ms=pl.lit(DURATION_MS, pl.Int64),
        release_date=pl.date(year, 1, 1), is_paid=pl.lit(False))
    (home / "landing" / "items").mkdir(parents=True, exist_ok=True)
    catalogue.write_parquet(home / "landing" / "items" / "items.parquet")
    age = pl.col("age").cast(pl.Int32, strict=False)
    bucket = pl.lit(None, pl.String)
    for upper, name in reversed(AGE_BUCKETS):
        bucket = pl.when(age < upper).then(pl.lit(name)).otherwise(bucket)
    people = users.select(pl.format("u{}", "user_id").alias("user_id"), country=pl.lit("US"), age_bucket=bucket,
                          signup_date=pl.lit(dt.date(1997, 1, 1)), plan=pl.col("occupation"))
    (home / "landing" / "users").mkdir(parents=True, exist_ok=True)
    people.write_parquet(home / "landing" / "users" / "users.parquet")

    as_of = last_day + dt.timedelta(days=1)
    (home / "crossfade.yaml").write_text(yaml.safe_dump({
        "item_types": ["podcast", "audiobook"], "graph_types": ["podcast", "audiobook"], "target_type": "audiobook",
        "window_days": 180, "holdout_days": 30, "as_of": as_of.isoformat(), "min_co_listeners": 2}))
    counts = catalogue.group_by("item_type").len().sort("item_type").rows()
    print(f"ml-100k: {ratings.height:,} ratings, {events.height:,} events, {users.height} users, items {counts}, "
          f"as-of {as_of}", flush=True)
    return as_of


def prepare(home: Path, as_of: dt.date) -> None:
    """Ingest the landing zone and build the feature tables, as the raw and feature assets do."""
    settings = load_settings(home=str(home))
    store = Store(settings.database)
    with store.write() as con:
        ingest.ingest_items(con, settings.landing, settings.item_types)
        ingest.ingest_users(con, settings.landing)
        ingest.ingest_events(con, settings.landing, (as_of - dt.timedelta(days=1)).isoformat())
        params = FeatureParams(as_of=as_of, window_days=settings.window_days, holdout_days=settings.holdout_days,
                               target_type=settings.target_type, graph_types=settings.graph_types,
                               min_co_listeners=settings.min_co_listeners,
                               max_items_per_user=settings.max_items_per_user)
        for name in FEATURE_TABLES:
            build_table(con, name, params)
        users = con.execute("select count(*) filter (where is_warm), count(*) filter (where not is_warm and "
                            "has_holdout_target) from features.user_stats").fetchone()
        edges = con.execute("select relation, count(*) from features.co_listen_edges group by 1 order by 1").fetchall()
    print(f"features: warm users {users[0]}, cold users with a holdout target {users[1]}, edges {edges}", flush=True)


def report(metrics: pl.DataFrame, seconds: float) -> None:
    wanted = metrics.filter(pl.col("metric").is_in(["ndcg@10", "recall@20"]) & pl.col("model").is_in(REPORTED))
    table = (wanted.with_columns(pl.format("{} ± {}", pl.col("value").round(4), pl.col("std_error").round(4))
                                 .alias("cell"), pl.format("{} {}", "slice", "metric").alias("column"))
             .pivot(on="column", index="model", values="cell"))
    users = metrics.filter((pl.col("model") == "popularity") & (pl.col("metric") == "ndcg@10")).select("slice", "users")
    with pl.Config(tbl_rows=20, tbl_cols=12, tbl_width_chars=200, fmt_str_lengths=20):
        print(table)
        print(users)
    ndcg = dict(metrics.filter((pl.col("slice") == "all") & (pl.col("metric") == "ndcg@10"))
                .select("model", "value").rows())
    ours, baseline = ndcg["two_tower_hgnn"], max(ndcg["als"], ndcg["popularity"])
    print(f"model stage and evaluation: {seconds:.0f} s")
    print(f"RESULT ml100k ours={ours:.4f} baseline={baseline:.4f} ratio={ours / baseline if baseline else float('inf'):.3f} "
          "unit=ndcg@10")


if __name__ == "__main__":
    main()
