"""Benchmark: the models stage's choices and eval's holdout scoring, read-only, on a CROSSFADE_HOME already run.

For a home whose nightly chain has run (features, enrichment, models.hgnn_item_embeddings, models.registry),
this runs what `crossfade run --select models --select eval` would run for the servable models, with the
code of this checkout and without writing anything:

1. Validation (models.protocol.validate): Popularity, item-KNN, EASE, ALS, LLM-KNN and 2T-HGNN fitted on
   train, the baselines' grids, then the fusion's grid (FUSION_GRID) over the tuned models' lists; the
   serving plan per slice by validation HR@10.
2. Holdout, once: every model refitted on train + valid with the settings chosen in 1 (2T-HGNN with the
   home's registered two-tower config and HGNN vectors, as the models stage refits its bundle), scored
   with the plan's own lists ('served'), as eval/offline_metrics scores them.

It prints quality.py's tables and verdicts. Use it where the whole chain would take too long to run again
for a change of the models stage (the 100k-user world: hours), or to see the fusion's grid.

Run from the repository root:
    python bench/fusion.py --home /path/to/crossfade_home --world sample100k
RESULT: quality.py's line for world `fusion_<world>`: served against the best baseline, holdout cold HR@10.
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
from models.evaluate import HOLDOUT, EvaluateConfig, evaluation_set, model_builders, score  # noqa: E402

import quality  # noqa: E402
import search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME whose nightly chain has run")
    parser.add_argument("--world", default="home", help="the world's name in the tables and the RESULT line")
    args = parser.parse_args()
    started = time.perf_counter()
    frames, hgnn, text, profile, config = search.validation_inputs(args.home)
    print(f"{args.home}: {frames.interactions.height:,} interactions; validating {', '.join(config.models)}",
          flush=True)
    validation = protocol.validate(frames, hgnn, text, profile, config)
    plan = protocol.serving_plan(validation.metrics)
    print(f"validated in {time.perf_counter() - started:.0f} s; plan {plan}", flush=True)
    with pl.Config(tbl_rows=40, fmt_str_lengths=120, tbl_width_chars=200, tbl_formatting="MARKDOWN",
                   tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        print(f"\ngrids (tuning metric {' '.join(protocol.TUNING_METRIC)} on validation):\n{validation.grid}")
    holdout = score_holdout(frames, hgnn, text, profile, validation.config, plan)
    metrics = protocol.with_validation(holdout, {"validation_rows": validation.metrics.to_dicts()})
    quality.report(f"fusion_{args.world}", metrics, time.perf_counter() - started)


def score_holdout(frames, hgnn, text, profile, config: EvaluateConfig, plan: dict) -> pl.DataFrame:
    """Every model of `config` refitted on train + valid and scored on the holdout, with the plan's lists."""
    chosen = evaluation_set(frames, config, HOLDOUT)
    builders = protocol.cached(model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users,
                                              HOLDOUT.fitted))
    builders[protocol.SERVED] = protocol.served_builder(builders, plan, chosen)
    return score(builders, (*config.models, protocol.SERVED), frames, chosen, config)[0]


if __name__ == "__main__":
    main()
