"""Benchmark: the paper's ablations of 2T-HGNN on a featurised warehouse (default: the sample world).

Each variant trains the HGNN (crossfade's graph, sampler and encoder) and the two-tower model on the
train period and scores them against Popularity on the holdout with crossfade's offline evaluation:
  full                  balanced sampler, per-relation fan-out, every relation, weak signals
  no_balanced_sampler   every training edge every epoch, one shared fan-out (paper's ablation A)
  no_weak_signals       follows, saves, previews and purchases dropped from features and labels (B)
  drop_<relation>       the cross-type relation removed from the graph
  single_relation       only the target type's own relation (target-target co-listening)
The warehouse must hold features (`crossfade run --select raw --select features`); enrichment is used
when present, else hashed text features. RESULT: full cold HR@10 against the worst ablation's.
"""
from pathlib import Path
import argparse
import dataclasses
import os
import sys
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from models.recommender import FeatureFrames  # noqa: E402
from models.text_features import text_or_hashed  # noqa: E402
from warehouse import readers  # noqa: E402
from models import hgnn, two_tower  # noqa: E402
from models.bundle import ModelBundle, evaluate_bundle, slice_metrics  # noqa: E402
from models.evaluate import EvaluateConfig  # noqa: E402
from models.graph import build_graph, relation_name, relation_names  # noqa: E402
from models.text_features import node_features  # noqa: E402
from warehouse.settings import load_settings  # noqa: E402
from warehouse.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=os.environ.get("CROSSFADE_HOME", ".crossfade"),
                        help="CROSSFADE_HOME whose warehouse holds the features")
    parser.add_argument("--hgnn-epochs", type=int, default=6)
    parser.add_argument("--tt-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = load_settings(home=args.home)
    with Store(settings.database).read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
        edges = con.sql("select * from features.co_listen_edges").pl()
        text, text_source = text_or_hashed(readers.item_text_embeddings(con), frames.items)
        profile = readers.profile_embeddings(con)
    print(f"warehouse {settings.database}; text features: {text_source}; profiles: {profile is not None}", flush=True)
    target, graph_types = settings.target_type, tuple(settings.graph_types)
    others = [t for t in graph_types if t != target]
    cross = relation_name(target, others[0]) if others else None
    base_hgnn = hgnn.HGNNConfig(max_epochs=args.hgnn_epochs, patience=3, batch_size=1024, seed=args.seed, num_threads=1)
    base_tt = two_tower.TwoTowerConfig(target_type=target, graph_types=graph_types, item_types=settings.item_types,
                                       epochs=args.tt_epochs, seed=args.seed)
    # name -> (HGNN variant, its config, kept relations (None: all), two-tower config)
    variants = {
        "full": ("full", base_hgnn, None, base_tt),
        "no_balanced_sampler": ("no_balanced_sampler",
                                dataclasses.replace(base_hgnn, balanced=False, per_relation_fanout=False), None, base_tt),
        "no_weak_signals": ("full", base_hgnn, None, dataclasses.replace(base_tt, use_weak_signals=False)),
    }
    if cross:
        kept = [r for r in relation_names(graph_types) if r != cross]
        variants[f"drop_{cross}"] = (f"drop_{cross}", base_hgnn, kept, base_tt)
        variants["single_relation"] = ("single_relation", base_hgnn, [relation_name(target, target)], base_tt)
    rows, popularity, trained = [], None, {}
    for name, (key, hgnn_config, relations, tt_config) in variants.items():
        started = time.perf_counter()
        if key not in trained:  # no_weak_signals reuses the full model's HGNN
            trained[key] = _hgnn_vectors(frames, edges, text, graph_types, target, relations, hgnn_config)
        vectors, state = trained[key]
        model = two_tower.fit(frames, tt_config, text_embeddings=text, hgnn_embeddings=vectors,
                              profile_embeddings=profile)
        bundle = ModelBundle(model, vectors, {"model_version": name}, state)
        config = EvaluateConfig(target_type=target, graph_types=graph_types, k=settings.k,
                                models=("popularity", "two_tower_hgnn"), two_tower=tt_config)
        metrics, _ = evaluate_bundle(bundle, frames, text, profile, config)
        ours = slice_metrics(metrics, "two_tower_hgnn")
        popularity = popularity or slice_metrics(metrics, "popularity")
        seconds = time.perf_counter() - started
        rows.append({"variant": name, **{f"{s} hr@10": ours[s]["hr@10"] for s in ("cold", "warm", "all")},
                     "cold ndcg@10": ours["cold"]["ndcg@10"], "coverage@100": ours["all"]["coverage@100"],
                     "seconds": round(seconds, 1)})
        print(f"  {name}: cold hr@10 {ours['cold']['hr@10']:.4f}, warm {ours['warm']['hr@10']:.4f} "
              f"({seconds:.0f} s)", flush=True)
    table = pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(4))
    rows.append({"variant": "popularity (baseline)", **{f"{s} hr@10": popularity[s]["hr@10"] for s in ("cold", "warm", "all")},
                 "cold ndcg@10": popularity["cold"]["ndcg@10"], "coverage@100": popularity["all"]["coverage@100"],
                 "seconds": 0.0})
    with pl.Config(tbl_rows=20, tbl_cols=10, tbl_width_chars=140):
        print(pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(4)))
    full = float(table.filter(pl.col("variant") == "full")["cold hr@10"][0])
    worst = float(table.filter(pl.col("variant") != "full")["cold hr@10"].min())
    print(f"RESULT ablations ours={full:.4f} baseline={worst:.4f} ratio={full / worst if worst else float('inf'):.3f} "
          "unit=hr@10")


def _hgnn_vectors(frames, edges: pl.DataFrame, text: pl.DataFrame, graph_types: tuple[str, ...], target: str,
                  relations: list[str] | None, config: hgnn.HGNNConfig) -> tuple[pl.DataFrame, dict]:
    """HGNN vectors of every graph and target item for one graph variant, as the asset computes them."""
    nodes = (frames.items.filter(pl.col("item_type").is_in(sorted({*graph_types, target})))
             .select("item_id", "item_type").unique("item_id").sort("item_id"))
    graph = build_graph(edges, nodes, relations if relations is not None else relation_names(graph_types))
    features, _ = node_features(nodes["item_id"], text)
    result = hgnn.train(graph, features, config)
    print(f"    hgnn {list(graph.relations)}: best epoch {result.best_epoch}/{len(result.curve)}, "
          f"{result.timings['total']:.0f} s", flush=True)
    return result.embeddings_frame(), result.model_state


if __name__ == "__main__":
    main()
