"""Benchmark: can one list hold every slice, long-tail included? The fusion with the tail items kept.

On a CROSSFADE_HOME already run, read-only: item-KNN, EASE and (unless --no-two-tower) 2T-HGNN are fitted
with the settings the registry row chose on validation, the fusion of their lists is built with its chosen
setting, and two variants of it keep the long-tail items (popularity tier >= 3) of the baseline best on the
long-tail slice (of Popularity, item-KNN, EASE, ALS and LLM-KNN, all fitted alike):

- 'tail@10': that baseline's tail items in its top 10 take the last slots of the fused top 10;
- 'tail@10+20': the same, and its tail items at ranks 11-20 take the last slots of ranks 11-20;
- 'tail@own': its tail items in its top 10 keep their own ranks.

and routes a router could take, since it sees a user's history and not their targets: 'route@q0.5' (and
q0.8, q0.9) serves that baseline's whole list to the users whose history (the periods the lists were fitted
on) has a share of tail items at or above that quantile of the scored users (and above 0), the fusion to the others.

A kept item stays a hit where the baseline's own list had it in the top 10 (or 20), so the long-tail HR@10
(and Recall@20) of the variant are at least the baseline's; the slots it takes come from the fused list's
head items. Every list is scored on one split and compared, per slice and metric, with the best baseline
within one standard error (quality.py's verdicts). Lists are fitted on the periods before the split.

Run from the repository root:
    python bench/long_tail.py --home /path/to/crossfade_home --world demo --split valid
RESULT: ours = cells (slice x metric) the best variant or route holds, baseline = cells the fusion holds.
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
from models.evaluate import PRODUCTION_MODEL, EvaluateConfig, model_builders, score  # noqa: E402
from models.fusion import FusionConfig, fuse  # noqa: E402
from models.metrics import LONG_TAIL_MIN_TIER  # noqa: E402
from models.recommender import RECOMMENDATION_SCHEMA  # noqa: E402

import quality  # noqa: E402
import search  # noqa: E402

BASELINES = tuple(name for name in protocol.SERVABLE if name != PRODUCTION_MODEL and name not in protocol.NOT_BASELINES)
BLOCKS = {"tail@10": ((1, 10),), "tail@10+20": ((1, 10), (11, 20)),
          "tail@own": tuple((rank, rank) for rank in range(1, 11))}  # one rank per block: the source's own ranks
ROUTES = {"route@q0.5": 0.5, "route@q0.8": 0.8, "route@q0.9": 0.9}  # quantiles of the users' history tail share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME whose nightly chain has run")
    parser.add_argument("--world", default="home", help="the world's name in the RESULT line")
    parser.add_argument("--split", choices=("valid", "holdout"), default="valid")
    parser.add_argument("--no-two-tower", action="store_true", help="fuse item-KNN and EASE only (no 2T-HGNN fit)")
    args = parser.parse_args()
    started = time.perf_counter()
    _, frames, hgnn, text, profile, config, phase, chosen = search.run_split(args.home, args.split)
    fusion = config.fusion if not args.no_two_tower else FusionConfig(("item_knn", "ease"), (1.0, 1.0))
    builders = model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users, phase.fitted)
    depth = max(fusion.depth, config.list_length)
    lists = {name: builders[name]().recommend(chosen.users, depth) for name in sorted({*BASELINES, *fusion.models})}
    lists["fusion"] = fuse([lists[name] for name in fusion.models], fusion.weights, fusion.offset, depth)
    baseline_scores = _scores(lists, BASELINES, frames, chosen, config)  # each list scored once, here or below
    source = max(BASELINES, key=lambda name: _value(baseline_scores.filter(pl.col("model") == name), "long_tail",
                                                         "hr@10"))
    tail = frames.item_stats.filter(pl.col("popularity_tier") >= LONG_TAIL_MIN_TIER)["item_id"].cast(pl.String)
    for name, blocks in BLOCKS.items():
        lists[name] = keep_tail(lists["fusion"], lists[source], tail, blocks, config.list_length)
    shares = tail_share(frames.history(phase.fitted), tail, chosen.users)
    for name, quantile in ROUTES.items():
        threshold = shares["share"].quantile(quantile)
        routed = shares.filter((pl.col("share") >= threshold) & (pl.col("share") > 0))["user_id"]
        lists[name] = route(lists["fusion"], lists[source], routed)
        print(f"{name}: {routed.len():,} of {shares.height:,} users take {source}'s list "
              f"(history tail share >= {threshold:.3f} and > 0)")
    print(f"{args.home}: {args.split}, {chosen.users.len():,} users; fusion {fusion}; tail kept from {source}; "
          f"{time.perf_counter() - started:.0f} s")
    others = tuple(name for name in lists if name not in BASELINES)
    held = report(pl.concat([baseline_scores, _scores(lists, others, frames, chosen, config)]), args.split)
    best = max((*BLOCKS, *ROUTES), key=lambda name: held[name])
    print(f"RESULT long_tail_{args.world} ours={held[best]} baseline={held['fusion']} "
          f"ratio={held[best] / max(held['fusion'], 1):.3f} unit=cells_held_{args.split}")


def keep_tail(base: pl.DataFrame, source: pl.DataFrame, tail: pl.Series,
              blocks: tuple[tuple[int, int], ...], length: int) -> pl.DataFrame:
    """`base`'s lists with `source`'s tail items of each block (first, last rank) in that block's last slots,
    in `source`'s order; `base`'s other items fill the free ranks in their order."""
    block = pl.lit(None, pl.Int64)
    for n, (first, last) in enumerate(blocks):
        block = pl.when(pl.col("rank").is_between(first, last)).then(pl.lit(n)).otherwise(block)
    lasts = {n: last for n, (_, last) in enumerate(blocks)}
    kept = (source.filter(pl.col("item_id").is_in(tail.implode())).with_columns(block=block)
            .filter(pl.col("block").is_not_null()).sort("user_id", "rank")
            .with_columns(order=pl.int_range(pl.len()).over("user_id", "block"),
                          count=pl.len().over("user_id", "block"))
            .with_columns(rank=pl.col("block").replace_strict(lasts, return_dtype=pl.Int64)
                          - pl.col("count") + 1 + pl.col("order"))
            .select("user_id", "item_id", pl.col("rank").cast(pl.Int64)))
    users = base.select("user_id").unique()
    free = (users.join(pl.DataFrame({"rank": pl.arange(1, length + 1, eager=True).cast(pl.Int64)}), how="cross")
            .join(kept, on=["user_id", "rank"], how="anti").sort("user_id", "rank")
            .with_columns(slot=pl.int_range(pl.len()).over("user_id")))
    rest = (base.join(kept, on=["user_id", "item_id"], how="anti").sort("user_id", "rank")
            .with_columns(slot=pl.int_range(pl.len()).over("user_id")).select("user_id", "item_id", "slot"))
    filled = rest.join(free, on=["user_id", "slot"]).select("user_id", "item_id", "rank")
    merged = pl.concat([kept.join(users, on="user_id", how="semi"), filled]).sort("user_id", "rank")
    return merged.with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"),  # no gap where base ran short
                               score=pl.lit(None, pl.Float64)).cast(RECOMMENDATION_SCHEMA)  # ranked, not scored


def tail_share(history: pl.DataFrame, tail: pl.Series, users: pl.Series) -> pl.DataFrame:
    """user_id, share: per scored user, the share of their history's items that are tail items (0 without any)."""
    shares = (history.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String).is_in(tail.implode())
                             .alias("is_tail"))
              .group_by("user_id").agg(share=pl.col("is_tail").mean()))
    return (users.cast(pl.String).to_frame("user_id").join(shares, on="user_id", how="left")
            .with_columns(pl.col("share").fill_null(0.0)))


def route(base: pl.DataFrame, source: pl.DataFrame, routed: pl.Series) -> pl.DataFrame:
    """`source`'s lists for the routed users, `base`'s for everyone else."""
    to_source = pl.col("user_id").cast(pl.String).is_in(routed.cast(pl.String).implode())
    return pl.concat([base.filter(~to_source), source.filter(to_source)]).sort("user_id", "rank")


def report(metrics: pl.DataFrame, split: str) -> dict[str, int]:
    """Print every list's cells; return per candidate list the cells it holds against the best baseline."""
    cells = (metrics.filter(pl.col("metric").is_in(quality.METRICS))
             .with_columns(cell=pl.format("{} ± {}", pl.col("value").round(3), pl.col("std_error").round(3)))
             .pivot(on="model", index=["slice", "metric"], values="cell"))
    held = {}
    for name in ("fusion", *BLOCKS, *ROUTES):
        rows = metrics.filter(pl.col("model").is_in([*BASELINES, name])).with_columns(
            model=pl.when(pl.col("model") == name).then(pl.lit(protocol.SERVED)).otherwise("model"),
            split=pl.lit(split))
        checked = quality.verdicts(rows, split)
        held[name] = int(checked["holds"].sum())
        cells = cells.join(checked.select("slice", "metric", pl.col("holds").alias(f"{name} holds")),
                           on=["slice", "metric"], how="left")
    with pl.Config(tbl_rows=40, tbl_cols=32, tbl_width_chars=400, fmt_str_lengths=24, tbl_hide_dataframe_shape=True,
                   tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True):
        print(cells)
    print("cells held against the best baseline, within one standard error: "
          + ", ".join(f"{name} {count} of {len(cells)}" for name, count in held.items()))
    return held


def _scores(lists: dict[str, pl.DataFrame], names: tuple[str, ...], frames, chosen, config: EvaluateConfig
            ) -> pl.DataFrame:
    """eval's metrics (evaluate.score) of the named lists, each served as ranked."""
    return score({name: lambda frame=lists[name]: protocol.FixedLists(frame) for name in names}, names, frames,
                 chosen, config)[0]


def _value(scores: pl.DataFrame, slice_name: str, metric: str) -> float:
    row = scores.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))
    return row["value"].fill_null(0.0).max() or 0.0


if __name__ == "__main__":
    main()
