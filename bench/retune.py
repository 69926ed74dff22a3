"""Benchmark: validation with its grids (a retuning night) against validation at the settings they chose.

Reads a CROSSFADE_HOME whose warehouse holds a finished nightly run, read-only, and runs the models stage's
validation (`models.protocol.validate`) twice on its data, as `models/two_tower` does
(README, "Evaluation protocol"):

1. with the grids: every baseline's grid, 2T-HGNN's factor weights and the fusion grid, as on a night when
   the settings are `retune_days` old or more;
2. at the settings (1) chose (`protocol.tuned`, `retune=False`), as on the nights between.

An untimed warm-up pass runs first, so that neither timed run pays the process's one-time costs.
Prints each run's seconds and grid points, and whether the two agree on the settings, the plan and every
validation figure. The refit on train + valid that follows either in the stage is not run here.

Run from the repository root (about 6 minutes on the 2,000-user demo world):
    python bench/retune.py --home /path/to/crossfade_home
RESULT: validations an hour at the reused settings against with the grids.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from models import protocol  # noqa: E402
from search import validation_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME with a finished nightly run")
    args = parser.parse_args()
    frames, hgnn, text, profile, config = validation_inputs(args.home)
    print(f"{args.home}: {frames.interactions.height:,} interaction rows, {frames.user_stats.height:,} users")
    # untimed: the first validation in a process pays one-time costs (imports, kernels, caches) the timed ones
    # would otherwise not share alike
    started = time.perf_counter()
    protocol.validate(frames, hgnn, text, profile, config, retune=False)
    print(f"warm-up at the default settings: {time.perf_counter() - started:.1f} s (not compared)")
    started = time.perf_counter()
    full = protocol.validate(frames, hgnn, text, profile, config)
    grids = time.perf_counter() - started
    print(f"with the grids: {grids:.1f} s, {full.grid.height} grid points; "
          f"chose {protocol.tuned_settings(full.config)}")
    reused_config = protocol.tuned(config, {"tuned": protocol.tuned_settings(full.config)})
    started = time.perf_counter()
    again = protocol.validate(frames, hgnn, text, profile, reused_config, retune=False)
    reused = time.perf_counter() - started
    print(f"at the chosen settings: {reused:.1f} s, {again.grid.height} grid points")
    joined = full.metrics.join(again.metrics, on=["model", "slice", "metric"], how="full", suffix="_reused")
    gap = joined.select((pl.col("value") - pl.col("value_reused")).abs().max()).item()
    print(f"same settings: {again.config == full.config}; same plan: "
          f"{protocol.serving_plan(again.metrics) == protocol.serving_plan(full.metrics)}; "
          f"{joined.height} validation figures, largest difference {gap}")
    for name, step in protocol.serving_plan(again.metrics).items():
        print(f"  plan {name}: {step['model']} (validation HR@10 {step['value']:.4f}, {step['users']} users)")
    print(f"RESULT retune ours={3600 / reused:.2f} baseline={3600 / grids:.2f} ratio={grids / reused:.3f} "
          "unit=validations/hour")


if __name__ == "__main__":
    main()
