"""Evaluation stage: every model offline on the temporal split (eval.offline_metrics, eval.offline_lists),
then the profile-aware LLM judge on a seeded cohort (eval.judge_scores)."""

import json
import time

import dagster as dg
import duckdb
import polars as pl

from assets.common import WRITES_TAG, check_result, markdown_table, png_markdown
from assets.llm_calls import ask, known_answers
from assets.models import models_two_tower
from assets.resources import Crossfade, LLMBackend, Warehouse
from models import judge, protocol
from models.bundle import BUNDLED_MODEL, ModelBundle, evaluate_bundle
from models.evaluate import MODELS, EvaluateConfig, plot_metrics
from models.recommender import FeatureFrames
from models.text_features import text_or_hashed
from quality import check
from warehouse import readers, registry
from warehouse.llm_cache import LLMCache
from warehouse.store import run_sql, scalar, table_exists

PLOTTED = ("hr@10", "mrr@100", "coverage@100", "recall@20", "ndcg@10", "served")


@dg.asset(op_tags=WRITES_TAG, key=["eval", "offline_metrics"], deps=[models_two_tower], group_name="eval", kinds={"duckdb"})
def eval_offline_metrics(context: dg.AssetExecutionContext, crossfade: Crossfade,
                         warehouse: Warehouse) -> dg.MaterializeResult:
    """Every model side by side: HR@10, MRR, coverage, Recall@K, NDCG@K for all, warm, cold and long-tail users,
    validation and holdout (column `split`).

    The holdout is scored here, once: Popularity, item-KNN, EASE, ALS (with the settings chosen on
    validation), LLM-KNN, HGNN alone and the two-tower without HGNN refitted on train + valid, the newest
    registered 2T-HGNN bundle (loaded, not retrained), and 'served', the serving plan's own lists. The
    validation rows are the ones models/two_tower recorded when it chose. Also writes eval.offline_lists,
    every model's holdout top 10 for every evaluated user, for the LLM judge.
    """
    settings = crossfade.settings()
    with warehouse.read() as con:
        as_of = crossfade.as_of(context, con)
        candidate = registry.latest(con)
        if candidate is None:
            raise dg.Failure("models.registry is empty: materialise models/two_tower first")
        frames = FeatureFrames(**readers.feature_tables(con))
        text, text_source = text_or_hashed(readers.item_text_embeddings(con), frames.items)
        profile = readers.profile_embeddings(con)
    bundle = ModelBundle.load(candidate["checkpoint_dir"])
    config = protocol.tuned(EvaluateConfig(
        target_type=settings.target_type, graph_types=settings.graph_types, k=settings.k,
        max_users=settings.eval_max_users, seed=settings.seed, models=MODELS, two_tower=bundle.two_tower.config),
        candidate["metrics"])
    started = time.perf_counter()
    holdout, lists = evaluate_bundle(bundle, frames, text, profile, config, candidate["metrics"].get("plan"))
    metrics = protocol.with_validation(holdout, candidate["metrics"])
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
            .pivot(on="slice", index=["model", "split"], values="value")
            .with_columns(pl.col(pl.Float64).round(4)))
    users = (metrics.filter((pl.col("metric") == "hr@10") & (pl.col("model") == "popularity"))
             .select("split", "slice", "users"))
    # reported with users 0, not left out
    empty = users.filter((pl.col("users") == 0) & (pl.col("split") == "holdout"))["slice"].to_list()
    context.log.info(f"eval.offline_metrics: {len(MODELS)} models scored in {seconds:.1f} s for {version}; "
                     f"slices without users: {', '.join(empty) or 'none'}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "offline_lists_rows": list_rows, "as_of": as_of.isoformat(),
        "model_version": version, "text_features": text_source, "seconds": round(seconds, 2),
        "eval_max_users": settings.eval_max_users,
        "hr@10_by_model_and_slice": dg.MetadataValue.md(markdown_table(hr10)),
        "users_by_slice": dg.MetadataValue.md(markdown_table(users)),
        "empty_slices": ", ".join(empty) or "none",
        "plot": png_markdown(plot_metrics(holdout.filter(pl.col("metric").is_in(PLOTTED))), "holdout metrics by model"),
    })


@dg.asset_check(asset=eval_offline_metrics, blocking=True, name="eval_offline_metrics_suite",
                description="Gate: every model reported on every slice (an empty slice with users 0), values in "
                            "[0, 1], some user scored, one as-of and model version.")
def eval_offline_metrics_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.read() as con:
        return check_result(check(con, "eval.offline_metrics", crossfade.thresholds()))


class JudgeRun(dg.Config):
    pairs: list[str] = [f"{BUNDLED_MODEL}:popularity"]  # 'model_a:model_b' from eval.offline_lists
    pointwise_model: str = BUNDLED_MODEL  # whose top items are judged one by one
    pointwise_items: int = 3
    list_length: int = 5  # items per list shown in a pairwise prompt (the human study showed 3)


def _lists(con: duckdb.DuckDBPyConnection, models: list[str], users: list[str], length: int) -> pl.DataFrame:
    return con.execute(
        """
        select l.model, l.user_id, l.rank, i.item_id, i.item_type, i.title, i.description, i.genres
        from eval.offline_lists as l
        inner join raw.items as i on l.item_id = i.item_id
        where l.model in (select unnest($models)) and l.user_id in (select unnest($users)) and l.rank <= $length
        order by l.user_id, l.model, l.rank
        """, {"models": models, "users": users, "length": length}).pl()


@dg.asset(op_tags=WRITES_TAG, key=["eval", "judge_scores"], deps=[eval_offline_metrics, ["enrich", "user_profiles"]],
          group_name="eval", kinds={"duckdb"})
def eval_judge_scores(context: dg.AssetExecutionContext, config: JudgeRun, crossfade: Crossfade,
                      warehouse: Warehouse, llm: LLMBackend) -> dg.MaterializeResult:
    """Profile-aware LLM judge on settings.judge_users users drawn with settings.seed.

    Pointwise: profile + one item of the two-tower's offline list -> aligned or not, with rationale and
    confidence; agreement with the user's held-out listening is reported. Pairwise: profile + two blinded
    offline lists, judged in both orders; a model wins only when both orders name it, otherwise it is a
    tie. Answers are cached; at most llm_call_budget new calls per run, the rest is left 'pending'.
    """
    settings = crossfade.settings()
    pairs = [tuple(pair.split(":", 1)) for pair in config.pairs]
    if any(len(pair) != 2 for pair in pairs):
        raise dg.Failure(f"pairs are written 'model_a:model_b' (got {config.pairs})")
    models = sorted({name for pair in pairs for name in pair} | {config.pointwise_model})
    with warehouse.read() as con:
        if not table_exists(con, "eval.offline_lists"):
            raise dg.Failure("eval.offline_lists is missing: materialise eval/offline_metrics first")
        as_of = scalar(con, "select max(as_of) from eval.offline_lists")
        known = set(con.execute("select distinct model from eval.offline_lists").pl()["model"].to_list())
        if not set(models) <= known:
            raise dg.Failure(f"models {sorted(set(models) - known)} are not in eval.offline_lists (has {sorted(known)})")
        eligible = con.execute(
            "select distinct l.user_id from eval.offline_lists as l inner join enrich.user_profiles as p "
            "on l.user_id = p.user_id where p.status <> 'no_activity' and l.model in (select unnest($models))",
            {"models": models}).pl()["user_id"]
        users = judge.sample_cohort(eligible, settings.judge_users, settings.seed)
        profiles = con.execute(
            "select user_id, profile_json as narrative_json, facts_json from enrich.user_profiles "
            "where user_id in (select unnest($u))",
            {"u": users}).pl()
        lists = _lists(con, models, users, config.list_length)
        features_as_of = scalar(con, "select max(end_at)::date from features.splits where split = 'holdout'")
        # Agreement with the holdout only means something when the lists were cut where the features are.
        holdout = con.execute(
            "select distinct user_id, item_id, true as in_holdout from features.interactions "
            "where period = 'holdout' and item_type = $target_type", {"target_type": settings.target_type},
        ).pl() if features_as_of == as_of else None
    cohort = profiles.with_columns(profile=pl.struct("narrative_json", "facts_json").map_elements(
        lambda row: judge.profile_text(row["narrative_json"], row["facts_json"]), return_dtype=pl.String))
    requests, described = judge.cohort_requests(cohort.sort("user_id"), lists, pairs, config.pointwise_model,
                                                config.pointwise_items)
    started = time.perf_counter()
    with llm.chat_model() as model:
        cache = known_answers(warehouse, model, requests)
        batch = ask(model, requests, cache, settings, warehouse)
    judged = described.join(judge.answers_frame(batch.results), on="entity_id", how="left").with_columns(
        pl.col("status").fill_null("pending"))
    pointwise = judged.filter(pl.col("kind") == "pointwise")
    pointwise = (pointwise.join(holdout, on=["user_id", "item_id"], how="left")
                 .with_columns(pl.col("in_holdout").fill_null(False)) if holdout is not None
                 else pointwise.with_columns(in_holdout=pl.lit(None, dtype=pl.Boolean)))
    pairwise = judge.order_winners(judged.filter(pl.col("kind") == "pairwise"))
    combined = judge.combine_orders(pairwise)
    pairwise = pairwise.join(combined.select("user_id", "model_a", "model_b", "final_winner"),
                             on=["user_id", "model_a", "model_b"], how="left")
    rows = pl.concat([pointwise, pairwise], how="diagonal_relaxed").with_columns(as_of=pl.lit(as_of))
    rates = judge.summary(pointwise, combined)
    with warehouse.write() as con:
        LLMCache(con).put_many(cache.new_rows)
        con.register("judged", rows.to_arrow())
        run_sql(con, "eval/judge_scores")
        con.unregister("judged")
        by_status = con.execute("select kind, status, count(*) as judgements from eval.judge_scores "
                                "group by 1, 2 order by 1, 2").pl()
    context.log.info(f"eval.judge_scores: {rows.height} judgements for {len(users)} users, {batch.calls} LLM calls, "
                     f"{batch.cache_hits} cache hits, {len(batch.deferred)} left for the next run "
                     f"({time.perf_counter() - started:.1f} s)")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows.height, "as_of": str(as_of), "cohort_users": len(users),
        **{key: rates[key] for key in ("positive_rate", "tie_rate", "holdout_agreement", "order_consistency")
           if key in rates},
        "summary": dg.MetadataValue.json(json.loads(json.dumps(rates))),
        "win_rates": dg.MetadataValue.md(markdown_table(pl.DataFrame(rates["pairs"]))),
        "judgements_by_status": dg.MetadataValue.md(markdown_table(by_status)),
        **batch.metadata(), "budget": settings.llm_call_budget, "llm_model": model.name, **llm.describe(),
    })


@dg.asset_check(asset=eval_judge_scores, blocking=True, name="eval_judge_scores_suite",
                description="Gate: known kinds, statuses and verdicts; each request judged once; pairs in both orders.")
def eval_judge_scores_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.read() as con:
        return check_result(check(con, "eval.judge_scores", crossfade.thresholds()))
