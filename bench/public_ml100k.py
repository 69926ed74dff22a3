"""Benchmark: 2T-HGNN against its baselines on MovieLens-100K, through `crossfade run` with every gate.

Data: ml-100k from the `recbole` wheel, found by worlds.movielens.locate_ml100k() (`make install` runs
`python -m worlds.movielens fetch`); when it is not there this script fetches it (PyPI, once).
worlds/movielens.py converts it into a landing zone and a crossfade.yaml (the mapping is in its
docstring and in bench/README.md) in a temporary CROSSFADE_HOME, then `crossfade run --as-of <the day
after the last rating>` runs the nightly chain in its own process: ingest, features, enrichment, models,
promotion gate, serving and evaluation, each behind its blocking check. On ml-100k the promotion gate
refuses the 2T-HGNN (nearly every cold user joined during the holdout, where Popularity is the ceiling),
so nothing is served and the script says so, then scores the refused candidate beside the baselines
with `crossfade run --select eval`. The figures come from the published eval.offline_metrics, where
every model shares the split, the users and the metrics.

--arrival single (the default) lands every event in one arrival partition; daily lands each on its own
day, which today stops at the raw volume gate (see worlds/movielens.py).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed

import polars as pl  # noqa: E402

from models.metrics import SLICES  # noqa: E402
from warehouse.store import Store  # noqa: E402
from worlds import movielens  # noqa: E402

OURS = "two_tower_hgnn"
METRICS = ("hr@10", "ndcg@10", "recall@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arrival", choices=("single", "daily"), default="single")
    parser.add_argument("--llm-call-budget", type=int, default=1, help="LLM calls per enrichment asset and judge")
    parser.add_argument("--keep", type=Path, default=None, help="use this CROSSFADE_HOME (empty) and keep it")
    args = parser.parse_args()
    source = movielens.locate_ml100k() or movielens.fetch_ml100k()
    with tempfile.TemporaryDirectory(prefix="crossfade-bench-ml100k-") as tmp:
        home = args.keep or Path(tmp) / "home"
        summary = movielens.ml100k_landing(source, home, arrival=args.arrival)
        print(f"ml-100k: {summary.ratings:,} ratings -> {summary.events:,} events in {summary.partitions} arrival "
              f"partition(s), {summary.users} users, items {summary.items_by_type}, as-of {summary.as_of}", flush=True)
        env = {name: value for name, value in os.environ.items() if not name.startswith(("CROSSFADE_", "DAGSTER_"))}
        env.update(CROSSFADE_HOME=str(home), HF_HUB_OFFLINE="1", CROSSFADE_LLM_CALL_BUDGET=str(args.llm_call_budget))
        started = time.perf_counter()
        if not crossfade_run(env, "--as-of", summary.as_of):
            status, reason = newest_registration(home)
            if status != "rejected" or not reason.startswith("promotion gate"):
                raise SystemExit(f"crossfade run stopped on ml-100k after {time.perf_counter() - started:.0f} s; "
                                 "its gate verdicts are above")
            print(f"\nthe promotion gate refused the candidate ({reason}): nothing is promoted or served. "
                  "Scoring it beside the baselines with `crossfade run --select eval`:", flush=True)
            if not crossfade_run(env, "--as-of", summary.as_of, "--select", "eval"):
                raise SystemExit("evaluation of the refused candidate failed; its gate verdicts are above")
        seconds = time.perf_counter() - started
        with Store(home / "warehouse" / "crossfade.duckdb").read() as con:
            metrics = con.execute("select model, slice, metric, value, std_error, users from eval.offline_metrics").pl()
        report(metrics, seconds)


def crossfade_run(env: dict[str, str], *args: str) -> bool:
    """`crossfade run` in its own process (the Dagster partitions read partitions_start at import); True on success."""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("20")), flush=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
    return done.returncode == 0


def newest_registration(home: Path) -> tuple[str, str]:
    """(status, reason) of the newest models.registry row, ('', '') when there is none."""
    with Store(home / "warehouse" / "crossfade.duckdb").read() as con:
        found = con.execute("select count(*) from duckdb_tables() where schema_name = 'models' and table_name = 'registry'")
        if not found.fetchone()[0]:
            return "", ""
        row = con.execute("select status, coalesce(reason, '') from models.registry order by created_at desc limit 1").fetchone()
    return row if row else ("", "")


def report(metrics: pl.DataFrame, seconds: float) -> None:
    """Per model and slice: HR@10, NDCG@10, Recall@20 (± standard error), users per slice, the RESULT line."""
    wanted = metrics.filter(pl.col("metric").is_in(METRICS)).with_columns(
        pl.format("{} ± {}", pl.col("value").round(3), pl.col("std_error").round(3)).alias("cell"),
        pl.col("slice").replace_strict({name: n for n, name in enumerate(SLICES)}, default=len(SLICES)).alias("order"))
    with pl.Config(tbl_rows=40, tbl_cols=12, tbl_width_chars=220, fmt_str_lengths=24, tbl_hide_dataframe_shape=True):
        for (slice_name,), part in wanted.sort("order").partition_by("slice", as_dict=True, maintain_order=True).items():
            users = part["users"].max()
            print(f"\n{slice_name} ({users:,} users with holdout targets):")
            print(part.pivot(on="metric", index="model", values="cell").select("model", *METRICS).sort("model"))
    ndcg = dict(metrics.filter((pl.col("slice") == "all") & (pl.col("metric") == "ndcg@10"))
                .select("model", "value").iter_rows())
    ours = ndcg.pop(OURS)
    best_name, baseline = max(ndcg.items(), key=lambda pair: pair[1])
    print(f"\nchain and evaluation, every gate: {seconds:.0f} s; best baseline on all users: {best_name}")
    ratio = ours / baseline if baseline else float("inf")
    print(f"RESULT ml100k ours={ours:.4f} baseline={baseline:.4f} ratio={ratio:.3f} unit=ndcg@10")


if __name__ == "__main__":
    main()
