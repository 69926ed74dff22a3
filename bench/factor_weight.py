"""Benchmark: 2T-HGNN's history-factor weight (TwoTowerConfig.history_factor_weight), validation then holdout.

Reads a CROSSFADE_HOME whose warehouse holds a finished nightly run (as bench/search.py does, read-only) and
follows the pipeline's protocol (README, "Evaluation protocol"):

1. Validation: 2T-HGNN is fitted once on 'train' with the home's registered settings and scored on 'valid'
   with the factor part of its user vectors at each weight (`--weights`, default models.protocol.FACTOR_WEIGHTS
   plus 0, the towers alone, and 1000, nearly the factor alone); the weight with the best tuning metric
   (NDCG@10 over all users, models.protocol.TUNING_METRIC) is the choice. EASE and item-KNN, at the
   registered settings, are scored beside it.
2. Holdout, once: 2T-HGNN refitted on train + valid, scored at every weight, and the two baselines.

Prints HR@10 / NDCG@10 per slice (all, warm, cold) of each weight and baseline, both splits.

Run from the repository root (about 5 minutes on the 2,000-user demo world):
    python bench/factor_weight.py --home /path/to/crossfade_home [--weights 0,1,2,4,8,1000]
RESULT: 2T-HGNN's holdout cold NDCG@10 at the weight validation chose against EASE's.
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

import polars as pl  # noqa: E402

from models import protocol  # noqa: E402
from models.evaluate import PRODUCTION_MODEL, model_builders, score  # noqa: E402
from models.two_tower import with_factor_weight  # noqa: E402
from search import run_split  # noqa: E402

BASELINES = ("ease", "item_knn")
SLICES = ("all", "warm", "cold")
METRICS = ("hr@10", "ndcg@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME with a finished nightly run")
    parser.add_argument("--weights", default=",".join(str(w) for w in (0.0, *protocol.FACTOR_WEIGHTS, 1000.0)),
                        help="comma-separated weights of the factor part")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    tables = {}
    for split in ("valid", "holdout"):
        tables[split] = scored(args.home, split, weights)
    valid = tables["valid"]
    slice_name, metric = protocol.TUNING_METRIC
    by_weight = valid.filter(pl.col("model").str.starts_with("weight ") & (pl.col("slice") == slice_name)
                             & (pl.col("metric") == metric)).sort("value", descending=True, maintain_order=True)
    chosen = by_weight["model"][0]
    for split, frame in tables.items():
        print(f"\n{split} (HR@10 / NDCG@10 ± one standard error):")
        print_table(frame)
    print(f"\nvalidation chose {chosen} (best {metric} over {slice_name} users)")
    holdout = tables["holdout"]

    def cell(model: str) -> float:
        return holdout.filter((pl.col("model") == model) & (pl.col("slice") == "cold")
                              & (pl.col("metric") == "ndcg@10"))["value"].item()
    ours, baseline = cell(chosen), cell("ease")
    print(f"RESULT factor_weight ours={ours:.4f} baseline={baseline:.4f} ratio={ours / baseline:.3f} "
          "unit=ndcg@10_cold_holdout")


def scored(home: Path, split: str, weights: list[float]) -> pl.DataFrame:
    """(model, slice, metric, value, std_error) of 2T-HGNN at each weight and of BASELINES on one split."""
    _, frames, hgnn, text, profile, config, phase, chosen = run_split(home, split)
    config = replace(config, two_tower=replace(config.two_tower, history_factor_weight=1.0))
    started = time.perf_counter()
    builders = model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users, phase.fitted)
    fitted = builders[PRODUCTION_MODEL]()
    print(f"{split}: 2T-HGNN fitted in {time.perf_counter() - started:.1f} s", flush=True)
    width = config.two_tower.hidden[-1]
    variants = {f"weight {w:g}": with_factor_weight(fitted, width, w) for w in weights}
    models = {name: (lambda r=recommender: r) for name, recommender in variants.items()}
    models |= {name: builders[name] for name in BASELINES}
    rows = score(models, tuple(models), frames, chosen, config)[0]
    return rows.filter(pl.col("metric").is_in(METRICS) & pl.col("slice").is_in(SLICES))


def print_table(frame: pl.DataFrame) -> None:
    """One row per model, one column per slice: 'HR@10 ± error / NDCG@10 ± error'."""
    cells = frame.with_columns(cell=pl.format("{} ± {}", pl.col("value").round(3), pl.col("std_error").round(3)))
    wide = cells.pivot(on="metric", index=["model", "slice"], values="cell")
    wide = wide.with_columns(cell=pl.col("hr@10") + " / " + pl.col("ndcg@10"))
    out = wide.pivot(on="slice", index="model", values="cell")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=250):
        print(out.select("model", *[s for s in SLICES if s in out.columns]))


if __name__ == "__main__":
    main()
