"""Offline evaluation stage: the bundled 2T-HGNN beside the paper's baselines on the global temporal split."""

import time

import dagster as dg
import polars as pl

from assets.common import WRITES_TAG, check_result, markdown_table
from assets.models import (frames_from, models_two_tower, png_markdown, profile_embeddings_from,
                           text_embeddings_from)
from models.bundle import ModelBundle, evaluate_bundle
from models.evaluate import MODELS, EvaluateConfig, plot_metrics
from pipelines.resources import Crossfade, Warehouse
from quality import check
from warehouse import registry
from warehouse.store import run_sql, scalar

PLOTTED = ("hr@10", "mrr@100", "coverage@100", "recall@20", "ndcg@10", "served")


@dg.asset(op_tags=WRITES_TAG, key=["eval", "offline_metrics"], deps=[models_two_tower], group_name="eval", kinds={"duckdb"})
def eval_offline_metrics(context: dg.AssetExecutionContext, crossfade: Crossfade,
                         warehouse: Warehouse) -> dg.MaterializeResult:
    """Every model side by side: HR@10, MRR, coverage, Recall@K, NDCG@K for all, warm, cold and long-tail users.

    Models: Popularity, ALS, LLM-KNN, HGNN alone, two-tower without HGNN (trained here on the train
    period) and the newest registered 2T-HGNN bundle (loaded, not retrained). Also writes
    eval.offline_lists, every model's top 10 for every evaluated user, for the LLM judge.
    """
    settings = crossfade.settings()
    with warehouse.read() as con:
        as_of = crossfade.as_of(context, con)
        candidate = registry.latest(con)
        if candidate is None:
            raise dg.Failure("models.registry is empty: materialise models/two_tower first")
        frames = frames_from(con)
        text, text_source = text_embeddings_from(con, frames.items)
        profile = profile_embeddings_from(con)
    bundle = ModelBundle.load(candidate["checkpoint_dir"])
    config = EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types, k=settings.k,
                            max_users=settings.eval_max_users, seed=settings.seed, models=MODELS,
                            two_tower=bundle.two_tower.config)
    started = time.perf_counter()
    metrics, lists = evaluate_bundle(bundle, frames, text, profile, config)
    seconds = time.perf_counter() - started
    version = candidate["model_version"]
    with warehouse.write() as con:
        for name, frame in (("metrics_frame", metrics), ("lists_frame", lists)):
            con.register(name, frame.to_arrow())
        run_sql(con, "eval/offline_metrics", {"as_of": as_of, "model_version": version})
        run_sql(con, "eval/offline_lists", {"as_of": as_of})
        for name in ("metrics_frame", "lists_frame"):
            con.unregister(name)
        rows = scalar(con, "select count(*) from eval.offline_metrics")
        list_rows = scalar(con, "select count(*) from eval.offline_lists")
    hr10 = (metrics.filter(pl.col("metric") == "hr@10")
            .pivot(on="slice", index="model", values="value").with_columns(pl.col(pl.Float64).round(4)))
    users = (metrics.filter((pl.col("metric") == "hr@10") & (pl.col("model") == "popularity"))
             .select("slice", "users"))
    context.log.info(f"eval.offline_metrics: {len(MODELS)} models scored in {seconds:.1f} s for {version}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "offline_lists_rows": list_rows, "as_of": as_of.isoformat(),
        "model_version": version, "text_features": text_source, "seconds": round(seconds, 2),
        "eval_max_users": settings.eval_max_users,
        "hr@10_by_model_and_slice": dg.MetadataValue.md(markdown_table(hr10)),
        "users_by_slice": dg.MetadataValue.md(markdown_table(users)),
        "plot": png_markdown(plot_metrics(metrics.filter(pl.col("metric").is_in(PLOTTED))), "metrics by model"),
    })


@dg.asset_check(asset=eval_offline_metrics, blocking=True, name="eval_offline_metrics_suite",
                description="Gate: every model on every slice, values in [0, 1], one as-of and model version.")
def eval_offline_metrics_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.read() as con:
        return check_result(check(con, "eval.offline_metrics", crossfade.thresholds()))
