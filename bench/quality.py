"""Benchmark: recommendation quality per world, every model beside the served plan, validation and holdout.

A world is built into a CROSSFADE_HOME (a temporary one unless --keep), `crossfade run` runs the nightly
chain on it in its own process with every gate, and the published eval.offline_metrics are printed: per
slice, HR@10, NDCG@10 and Recall@20 (± one standard error) of every model, validation (what every choice
read) beside holdout (scored once). Worlds:

- demo: the sample world `make demo` builds (2,000 users, 120 days, seed 7);
- sample100k: the same generator at 100,000 users;
- ml100k: MovieLens-100K re-cast as listening logs (worlds/movielens.py; `make install` fetches it).

After the tables, one verdict per slice and metric on the holdout: what is served against the best baseline,
and whether it is at least as good within one standard error (the larger of the two). The RESULT line compares
what is served with the best baseline on the holdout's cold slice (all users when the cold slice is empty):
ours = the 'served' rows' HR@10, baseline = the best baseline's.
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
from models import protocol  # noqa: E402
from models.protocol import SERVED  # noqa: E402
from warehouse.store import Store  # noqa: E402
from worlds import movielens  # noqa: E402
from worlds.sample import WorldConfig, simulate  # noqa: E402

OURS = "two_tower_hgnn"
METRICS = ("hr@10", "ndcg@10", "recall@20")
WORLDS = {"demo": 2_000, "sample100k": 100_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=(*WORLDS, "ml100k"), default="demo")
    parser.add_argument("--llm-call-budget", type=int, default=8, help="LLM calls per enrichment asset and judge")
    parser.add_argument("--keep", type=Path, default=None, help="use this CROSSFADE_HOME and keep it; a home whose world is already built "
                        "is run again as it is (ingest skips files it has read)")
    parser.add_argument("--no-ablations", action="store_true",
                        help="leave the two-tower ablations out of eval (eval_ablations: false): two fewer "
                             "two-tower fits")
    parser.add_argument("--report", type=Path, default=None, metavar="HOME",
                        help="only print the tables and verdicts of a CROSSFADE_HOME already run; runs nothing")
    args = parser.parse_args()
    if args.report:
        print_published(args.world, args.report, seconds=None)
        return
    with tempfile.TemporaryDirectory(prefix=f"crossfade-bench-{args.world}-") as tmp:
        home = args.keep or Path(tmp) / "home"
        as_of = build(args.world, home)
        env = {name: value for name, value in os.environ.items() if not name.startswith(("CROSSFADE_", "DAGSTER_"))}
        env.update(CROSSFADE_HOME=str(home), HF_HUB_OFFLINE="1", CROSSFADE_LLM_CALL_BUDGET=str(args.llm_call_budget),
                   CROSSFADE_EVAL_ABLATIONS=str(not args.no_ablations).lower())
        started = time.perf_counter()
        extra = ("--as-of", as_of) if as_of else ()
        if not crossfade_run(env, *extra):
            print("crossfade run stopped at a gate (verdicts above); scoring what was registered with "
                  "`crossfade run --select eval`", flush=True)
            if not crossfade_run(env, *extra, "--select", "eval"):
                raise SystemExit("evaluation failed; its gate verdicts are above")
        print_published(args.world, home, time.perf_counter() - started)


def print_published(world: str, home: Path, seconds: float | None) -> None:
    """The serving plan and the tables of `home`'s published eval.offline_metrics."""
    with Store(home / "warehouse" / "crossfade.duckdb").read() as con:
        metrics = con.execute("select split, model, slice, metric, value, std_error, users "
                              "from eval.offline_metrics").pl()
        plan = con.execute("select metrics->'plan' from models.registry order by created_at desc limit 1").fetchone()
    print(f"\nserving plan: {plan[0] if plan else 'none registered'}")
    report(world, metrics, seconds)


def build(world: str, home: Path) -> str | None:
    """Writes the world's landing zone (and crossfade.yaml for ml100k) under `home`; the as-of date to run."""
    if world == "ml100k":
        source = movielens.locate_ml100k() or movielens.fetch_ml100k()
        summary = movielens.ml100k_landing(source, home, arrival="single")
        print(f"ml-100k: {summary.ratings:,} ratings -> {summary.events:,} events, {summary.users} users, "
              f"items {summary.items_by_type}, as-of {summary.as_of}", flush=True)
        return summary.as_of
    if (home / "landing" / "_world.json").exists():  # --keep on a home built before: its world and warehouse stay
        print(f"{world}: reusing the world under {home / 'landing'}", flush=True)
        return None
    written = simulate(WorldConfig(users=WORLDS[world], days=120, seed=7), home / "landing")
    print(f"{world}: {written.users:,} users, {written.event_rows:,} event rows", flush=True)
    return None


def crossfade_run(env: dict[str, str], *args: str) -> bool:
    """`crossfade run` in its own process (the Dagster partitions read partitions_start at import); True on success."""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("20")), flush=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
    return done.returncode == 0


def table(metrics: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Per slice: model x (metric, split) cells 'value ± std_error', validation before holdout."""
    cells = metrics.filter(pl.col("metric").is_in(METRICS)).with_columns(
        pl.format("{} ± {}", pl.col("value").round(3), pl.col("std_error").round(3)).alias("cell"),
        (pl.col("metric") + " " + pl.col("split")).alias("column"))
    columns = [f"{metric} {split}" for metric in METRICS for split in ("valid", "holdout")]
    out = {}
    for slice_name in SLICES:
        part = cells.filter(pl.col("slice") == slice_name)
        if part.height:
            wide = part.pivot(on="column", index="model", values="cell")
            out[slice_name] = wide.select("model", *[c for c in columns if c in wide.columns]).sort("model")
    return out


def verdicts(metrics: pl.DataFrame, split: str = "holdout") -> pl.DataFrame:
    """Per slice and metric with users: served, the best baseline by value, and whether served holds within one
    standard error of it (served >= best - max(se_served, se_best)); 2T-HGNN's own margin over that baseline."""
    part = metrics.filter((pl.col("split") == split) & pl.col("metric").is_in(METRICS) & (pl.col("users") > 0)
                          & pl.col("value").is_not_null())
    rows = []
    for (slice_name, metric), group in part.group_by("slice", "metric", maintain_order=True):
        values = {model: (value, se or 0.0) for model, value, se in group.select("model", "value", "std_error").iter_rows()}
        baselines = {name: pair for name, pair in values.items() if protocol.is_baseline(name)}
        if SERVED not in values or not baselines:
            continue
        best, (best_value, best_se) = max(baselines.items(), key=lambda item: item[1][0])
        served, served_se = values[SERVED]
        ours = values.get(OURS, (None, None))[0]
        rows.append({"slice": slice_name, "metric": metric, "served": served, "best_baseline": best,
                     "baseline": best_value, "holds": served >= best_value - max(served_se, best_se),
                     "two_tower_hgnn_margin": None if ours is None else ours - best_value})
    order = {name: i for i, name in enumerate(SLICES)}
    schema = {"slice": pl.String, "metric": pl.String, "served": pl.Float64, "best_baseline": pl.String,
              "baseline": pl.Float64, "holds": pl.Boolean, "two_tower_hgnn_margin": pl.Float64}
    return (pl.DataFrame(rows, schema=schema)
            .sort(pl.col("slice").replace_strict(order, default=len(order)), pl.col("metric")))


def report(world: str, metrics: pl.DataFrame, seconds: float | None) -> None:
    """The tables, users per slice and split, and the RESULT line."""
    users = (metrics.filter((pl.col("metric") == "hr@10") & (pl.col("model") == "popularity"))
             .pivot(on="split", index="slice", values="users"))
    with pl.Config(tbl_rows=40, tbl_cols=12, tbl_width_chars=260, fmt_str_lengths=24, tbl_hide_dataframe_shape=True,
                   tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True):
        print(f"\nusers with targets per slice:\n{users}")
        for slice_name, frame in table(metrics).items():
            print(f"\n{world}, {slice_name}:\n{frame}")
        checked = verdicts(metrics)
        print(f"\nholdout, served against the best baseline (holds: within one standard error):\n"
              f"{checked.with_columns(pl.col('served', 'baseline', 'two_tower_hgnn_margin').round(4))}")
        print(f"served holds on {checked['holds'].sum()} of {checked.height} slice x metric cells")
    holdout = metrics.filter((pl.col("split") == "holdout") & (pl.col("metric") == "hr@10"))
    slice_name = "cold" if (holdout.filter(pl.col("slice") == "cold")["users"].max() or 0) > 0 else "all"
    values = dict(holdout.filter(pl.col("slice") == slice_name).select("model", "value").iter_rows())
    ours = values.get(SERVED) or 0.0
    baselines = {name: value for name, value in values.items() if protocol.is_baseline(name) and value is not None}
    best, baseline = max(baselines.items(), key=lambda pair: pair[1])
    took = "" if seconds is None else f"chain and evaluation, every gate: {seconds:.0f} s; "
    print(f"\n{took}holdout {slice_name} HR@10: served {ours:.4f}, "
          f"2T-HGNN {values.get(OURS) or 0.0:.4f}, best baseline {best} {baseline:.4f}")
    ratio = ours / baseline if baseline else float("inf")
    print(f"RESULT quality_{world} ours={ours:.4f} baseline={baseline:.4f} ratio={ratio:.3f} unit=hr@10_{slice_name}")


if __name__ == "__main__":
    main()
