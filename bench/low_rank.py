"""Benchmark: EASE cut to the width of a two-tower's dot product, beside EASE and 2T-HGNN.

A two-tower model scores user u and item i by <f(u), g(i)> in d dimensions (2T-HGNN: d = the last of
`TwoTowerConfig.hidden`, 128), so whatever its towers learn, its users x items score matrix has rank d
at most. EASE's scores are X B, X the users' history and B (items x candidates) its weights; cutting B to
its leading r singular vectors, B_r = U_r S_r V_r^T, gives a two-tower of width r with a linear user tower
(x_u U_r) and fixed item vectors (S_r V_r^T rows), fitted in closed form on the same data as EASE.

On a CROSSFADE_HOME already run, read-only: EASE is fitted on the periods before the split with the setting
the registry chose on validation, and scored whole and cut to each rank of --ranks, by eval's metrics
(HR@10, NDCG@10, Recall@20 per slice, with standard errors). 2T-HGNN's own figures on the same split are
read from the home (the registry's validation rows, or eval.offline_metrics' holdout rows): nothing is
refitted but EASE.

Run from the repository root:
    python bench/low_rank.py --home /path/to/crossfade_home --world demo --split valid
RESULT: ours = 2T-HGNN's cold HR@10, baseline = EASE's cut to 2T-HGNN's width (cold HR@10).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from models.evaluate import PRODUCTION_MODEL, model_builders, score  # noqa: E402
from warehouse import registry  # noqa: E402
from warehouse.store import Store  # noqa: E402

import search  # noqa: E402

METRICS = ("hr@10", "ndcg@10", "recall@20")
SLICES = ("all", "warm", "cold")


def truncated(weights: np.ndarray, ranks: list[int]) -> dict[int, np.ndarray]:
    """B cut to each rank r (its r leading singular vectors); a rank at or past B's own is B itself."""
    left, values, right = np.linalg.svd(np.asarray(weights, dtype=np.float64), full_matrices=False)
    return {r: np.ascontiguousarray((left[:, :r] * values[:r]) @ right[:r], dtype=np.float32) for r in ranks}


def recorded(store: Store, split: str) -> pl.DataFrame:
    """2T-HGNN's own rows (slice, metric, value, std_error) on the split, as the home's last run scored them."""
    with store.read() as con:
        if split == "valid":
            rows = pl.DataFrame(registry.latest(con)["metrics"]["validation_rows"])
        else:
            version = registry.latest(con)["model_version"]
            rows = con.sql("select * from eval.offline_metrics where split = 'holdout' and model_version = $v",
                           params={"v": version}).pl()
    rows = rows.filter(pl.col("model") == PRODUCTION_MODEL) if rows.height else rows
    if rows.height == 0:
        print(f"no {PRODUCTION_MODEL} rows for the {split} split in {store.database}: its figures show as 0")
        return pl.DataFrame(schema={"slice": pl.String, "metric": pl.String, "value": pl.Float64,
                                    "std_error": pl.Float64})
    return rows.select("slice", "metric", "value", "std_error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME whose nightly chain has run")
    parser.add_argument("--world", default="home", help="the world's name in the RESULT line")
    parser.add_argument("--split", choices=("valid", "holdout"), default="valid")
    parser.add_argument("--ranks", default="16,32,64,128,256,512")
    args = parser.parse_args()
    started = time.perf_counter()
    store, frames, hgnn, text, profile, config, phase, chosen = search.run_split(args.home, args.split)
    ease = model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users, phase.fitted)["ease"]()
    width = config.two_tower.hidden[-1]
    ranks = sorted({*(int(r) for r in args.ranks.split(",")), width})
    full_rank = int(np.linalg.matrix_rank(ease.weights))
    models = {"ease": lambda: ease}
    for r, weights in truncated(ease.weights, ranks).items():
        models[f"ease@{r}"] = lambda weights=weights: replace(ease, weights=weights)
    print(f"{args.home}: {args.split}, {chosen.users.len():,} users; EASE {config.ease} over "
          f"{ease.weights.shape[0]:,} items x {ease.weights.shape[1]:,} candidates (rank {full_rank}); "
          f"2T-HGNN width {width}; {time.perf_counter() - started:.0f} s", flush=True)
    metrics = pl.concat([score(models, tuple(models), frames, chosen, config)[0]
                         .select("model", "slice", "metric", "value", "std_error"),
                         recorded(store, args.split).with_columns(model=pl.lit(PRODUCTION_MODEL))
                         .select("model", "slice", "metric", "value", "std_error")])
    table = (metrics.filter(pl.col("metric").is_in(METRICS) & pl.col("slice").is_in(SLICES))
             .with_columns(cell=pl.format("{} ± {}", pl.col("value").round(3), pl.col("std_error").round(3)),
                           column=pl.col("slice") + " " + pl.col("metric"))
             .pivot(on="column", index="model", values="cell"))
    order = [PRODUCTION_MODEL, "ease", *(f"ease@{r}" for r in ranks)]
    table = table.join(pl.DataFrame({"model": order, "at": range(len(order))}), on="model").sort("at").drop("at")
    with pl.Config(tbl_rows=40, tbl_cols=12, tbl_width_chars=260, fmt_str_lengths=24, tbl_hide_dataframe_shape=True,
                   tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True):
        print(table.select("model", *(f"{s} {m}" for s in SLICES for m in METRICS)))

    def cold_hr(model: str) -> float:
        row = metrics.filter((pl.col("model") == model) & (pl.col("slice") == "cold") & (pl.col("metric") == "hr@10"))
        return float(row["value"].fill_null(0.0).max() or 0.0)

    ours, baseline = cold_hr(PRODUCTION_MODEL), cold_hr(f"ease@{width}")
    print(f"RESULT low_rank_{args.world} ours={ours:.4f} baseline={baseline:.4f} "
          f"ratio={ours / baseline if baseline else float('nan'):.3f} unit=hr@10_cold_{args.split}")


if __name__ == "__main__":
    main()
