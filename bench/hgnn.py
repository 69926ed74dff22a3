"""The HGNN's training on a home's own graph: the nightly settings against a variant, time and validation loss.

On a CROSSFADE_HOME whose features (and, if run, enrich) stages are published, read-only: the co-listening
graph and node features the `models/hgnn_item_embeddings` asset would train on (`assets.models.hgnn_inputs`),
trained by `models.hgnn.train` with the nightly `HGNNConfig` and with each variant's fields set
(`--variant batch_size=4096,lr=0.004`; repeat for more), each with every seed of `--seeds`. Per run it prints the
phases (edge split and positions, training, validation, final embedding), steps and seconds a step, the
best epoch and its validation loss and AUC (held-out edges against uniform negatives, the early-stopping
measure), and the peak resident memory so far.

Run from the repository root:
    python bench/hgnn.py --home /path/to/crossfade_home --variant num_threads=1 --variant batch_size=4096,lr=0.004
RESULT: ours = the first variant's trainings per hour, baseline = the nightly settings' (means over seeds).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from torch import Tensor  # noqa: E402

from assets.models import hgnn_inputs  # noqa: E402
from models.graph import ItemGraph  # noqa: E402
from models.hgnn import HGNNConfig, train  # noqa: E402
from warehouse.settings import load_settings  # noqa: E402
from warehouse.store import Store  # noqa: E402


def parse_variant(text: str) -> dict[str, object]:
    """'name=value,name=value' of HGNNConfig fields; a tuple field takes its values joined by '+'."""
    return dict(parse_setting(part) for part in text.split(",") if part)


def parse_setting(text: str) -> tuple[str, object]:
    """'name=value' for an HGNNConfig field, the value in that field's type ('none' for None)."""
    name, _, value = text.partition("=")
    known = {f.name for f in fields(HGNNConfig)}
    if name not in known or not value:
        raise argparse.ArgumentTypeError(f"expected name=value with a name of {sorted(known)} (got {text!r})")
    default = getattr(HGNNConfig(), name)
    if value.lower() == "none":
        return name, None
    if isinstance(default, tuple) or (default is None and "+" in value):
        return name, tuple(int(part) for part in value.split("+"))
    if isinstance(default, bool):
        return name, value.lower() in ("1", "true", "yes")
    if isinstance(default, float):
        return name, float(value)
    return name, int(value)


def run(label: str, graph: ItemGraph, features: Tensor, config: HGNNConfig) -> dict[str, object]:
    """Train once; print and return the run's row (phases, steps, best epoch, validation loss, peak so far)."""
    started = time.perf_counter()
    cpu = time.process_time()
    result = train(graph, features, config)
    seconds = time.perf_counter() - started
    best = result.curve[result.best_epoch - 1]
    steps = sum(-(-int(row["train_edges"]) // config.batch_size) for row in result.curve)
    row = {"run": label, "seed": config.seed, "s": seconds, "cpu s": time.process_time() - cpu,
           **{f"{k} s": v for k, v in result.timings.items() if k != "total"},
           "steps": steps, "s/step": result.timings["train"] / max(steps, 1),
           "epochs": len(result.curve), "best epoch": result.best_epoch,
           "valid loss": best["valid_loss"], "valid auc": best["valid_auc"],
           "peak GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    for epoch in result.curve:
        print(f"    epoch {epoch['epoch']}: train {epoch['train_loss']:.4f} valid {epoch['valid_loss']:.4f} "
              f"auc {epoch['valid_auc']:.4f} ({epoch['seconds']:.1f} s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME with published features")
    parser.add_argument("--world", default="home", help="the world's name in the RESULT line")
    parser.add_argument("--variant", dest="variants", type=parse_variant, action="append", default=[],
                        metavar="NAME=VALUE,...", help="HGNNConfig fields of one variant (repeat for more)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, each run for every setting")
    args = parser.parse_args()
    settings = load_settings(home=args.home)
    store = Store(args.home / "warehouse" / "crossfade.duckdb")
    tick = time.perf_counter()
    with store.read() as con:
        graph, features, text_source, missing = hgnn_inputs(con, settings.graph_types, settings.target_type)
    print(f"{args.home}: {graph.num_nodes:,} items, edges {graph.edge_counts()}, text from {text_source} "
          f"({missing:,} without), read in {time.perf_counter() - tick:.1f} s", flush=True)
    nightly = HGNNConfig()
    runs = {"nightly": nightly}
    for variant in args.variants or [{}]:
        label = ",".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in variant.items())
        runs[label or "nightly again"] = replace(nightly, **variant)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.extend(run(label, graph, features, replace(config, seed=seed)) for label, config in runs.items())
    print("\n| run | seed | s | train s | valid s | steps | s/step | best epoch | valid loss | valid auc |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['run']} | {row['seed']} | {row['s']:.1f} | {row['train s']:.1f} | {row['valid s']:.1f} | "
              f"{row['steps']} | {row['s/step']:.3f} | {row['best epoch']} of {row['epochs']} | "
              f"{row['valid loss']:.4f} | {row['valid auc']:.4f} |")
    mean = {label: statistics.mean(r["s"] for r in rows if r["run"] == label) for label in runs}
    first = list(runs)[1]
    ours, baseline = 3600 / mean[first], 3600 / mean["nightly"]
    print(f"RESULT hgnn_{args.world} ours={ours:.2f} baseline={baseline:.2f} ratio={ours / baseline:.3f} "
          "unit=trainings/hour")


if __name__ == "__main__":
    main()
