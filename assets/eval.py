"""Evaluation stage: every model offline on the temporal split (eval.offline_metrics, eval.offline_lists),
then the profile-aware LLM judge on a seeded cohort (eval.judge_scores) and its validity (eval.judge_validation)."""

import json
import time

import dagster as dg
import duckdb
import polars as pl

from assets.common import WAREHOUSE_POOL, gate, markdown_table, png_markdown
from assets.llm_calls import ask, known_answers
from assets.models import models_two_tower
from assets.resources import Crossfade, LLMBackend, Warehouse
from models import judge, judge_panel, protocol
from models.bundle import BUNDLED_MODEL, ModelBundle, evaluate_bundle
from models.evaluate import EvaluateConfig, evaluated_models, plot_metrics
from models.recommender import FeatureFrames
from models.text_features import text_or_hashed
from quality import check
from warehouse import readers, registry
from warehouse.llm_cache import LLMCache
from warehouse.store import run_sql, scalar, table_exists

PLOTTED = ("hr@10", "mrr@100", "coverage@100", "recall@20", "ndcg@10", "served")


@dg.asset(pool=WAREHOUSE_POOL, key=["eval", "offline_metrics"], deps=[models_two_tower], group_name="eval", kinds={"duckdb"})
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
        max_users=settings.eval_max_users, seed=settings.seed, models=evaluated_models(settings.eval_ablations),
        two_tower=bundle.two_tower.config),
        candidate["metrics"])
    started = time.perf_counter()
    holdout, lists = evaluate_bundle(bundle, frames, text, profile, config, candidate["metrics"].get("plan"))
    metrics = protocol.with_validation(holdout, candidate["metrics"])
    seconds = time.perf_counter() - started
    version = candidate["model_version"]
    with warehouse.write("eval.offline_metrics") as con:
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
    context.log.info(f"eval.offline_metrics: {len(config.models)} models scored in {seconds:.1f} s for {version}; "
                     f"slices without users: {', '.join(empty) or 'none'}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "offline_lists_rows": list_rows, "as_of": as_of.isoformat(),
        "model_version": version, "text_features": text_source, "seconds": round(seconds, 2),
        "eval_max_users": settings.eval_max_users, "eval_ablations": settings.eval_ablations,
        "hr@10_by_model_and_slice": dg.MetadataValue.md(markdown_table(hr10)),
        "users_by_slice": dg.MetadataValue.md(markdown_table(users)),
        "empty_slices": ", ".join(empty) or "none",
        "plot": png_markdown(plot_metrics(holdout.filter(pl.col("metric").is_in(PLOTTED))), "holdout metrics by model"),
    })


@dg.asset_check(asset=eval_offline_metrics, blocking=True, name="eval_offline_metrics_suite",
                description="Gate: every model reported on every slice (an empty slice with users 0), values in "
                            "[0, 1], some user scored, one as-of and model version.")
def eval_offline_metrics_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = check(con, "eval.offline_metrics", crossfade.thresholds())
    return gate(report, warehouse, "eval.offline_metrics")


# The promoted model is judged against each of these that eval.offline_lists holds, when no pairs are configured.
BASELINES = ("item_knn", "ease", "als", "two_tower", "popularity")


class JudgeRun(dg.Config):
    pairs: list[str] = []  # 'model_a:model_b' from eval.offline_lists; empty: 2T-HGNN against every baseline there
    pointwise_model: str = BUNDLED_MODEL  # whose top items are judged one by one
    pointwise_items: int = 3
    list_length: int = 5  # items per list shown in a pairwise prompt (the human study showed 3)


def _pairs(configured: list[str], known: set[str]) -> list[tuple[str, str]]:
    if not configured:
        return [(BUNDLED_MODEL, baseline) for baseline in BASELINES if baseline in known and BUNDLED_MODEL in known]
    pairs = [tuple(pair.split(":", 1)) for pair in configured]
    if any(len(pair) != 2 for pair in pairs):
        raise dg.Failure(f"pairs are written 'model_a:model_b' (got {configured})")
    return pairs  # type: ignore[return-value]


def _lists(con: duckdb.DuckDBPyConnection, models: list[str], users: list[str], length: int) -> pl.DataFrame:
    return con.execute(
        """
        select l.model, l.user_id, l.rank, i.item_id, i.item_type, i.title, i.description, i.genres
        from eval.offline_lists as l
        inner join raw.items as i on l.item_id = i.item_id
        where l.model in (select unnest($models)) and l.user_id in (select unnest($users)) and l.rank <= $length
        order by l.user_id, l.model, l.rank
        """, {"models": models, "users": users, "length": length}).pl()


def _shown(con: duckdb.DuckDBPyConnection, models: list[str], users: pl.Series, length: int) -> pl.DataFrame:
    """(model, user_id, item_id) of the lists a pairwise prompt would show, for `users` only."""
    shown = con.execute("select model, user_id, item_id from eval.offline_lists "
                        "where model in (select unnest($models)) and rank <= $length",
                        {"models": models, "length": length}).pl()
    return shown.join(users.to_frame("user_id"), on="user_id", how="semi")


def _with_profile_text(profiles: pl.DataFrame) -> pl.DataFrame:
    return profiles.with_columns(profile=pl.struct("narrative_json", "facts_json").map_elements(
        lambda row: judge.profile_text(row["narrative_json"], row["facts_json"]), return_dtype=pl.String))


@dg.asset(pool=WAREHOUSE_POOL, key=["eval", "judge_scores"], deps=[eval_offline_metrics, ["enrich", "user_profiles"]],
          group_name="eval", kinds={"duckdb"})
def eval_judge_scores(context: dg.AssetExecutionContext, config: JudgeRun, crossfade: Crossfade,
                      warehouse: Warehouse, llm: LLMBackend) -> dg.MaterializeResult:
    """Profile-aware LLM judge on settings.judge_users users drawn with settings.seed, and its validity.

    Pointwise: profile + one item of the two-tower's offline list -> aligned or not (verdict first, its
    P(aligned) from token log-probabilities), confidence and rationale; agreement with the user's held-out
    listening is reported. Pairwise: the promoted model against every baseline, profile + two blinded
    offline lists, judged in both orders; a model wins only when both orders name it, otherwise it is a tie.
    Validity (eval.judge_validation, models/judge_panel.py): on a panel of settings.judge_panel_users seeded
    users (a held-out item and an unconsumed released item each) the ROC-AUC of the LLM's P(aligned) and of
    sBERT-Sim (MiniLM cosine of profile and item text) with intervals, 'judge uninformative' when the interval
    holds 0.5, and sBERT-Sim alone on the larger reference panel (judge_reference_users) the LLM's is drawn
    from; per model pair how often each judge picks the list with more held-out items, on the cohort and on a
    pairwise panel (judge_pairwise_panel_users per pair, users whose two lists differ in held-out items).
    Answers are cached; both panels are asked in full every run, then at most llm_call_budget new calls, the
    rest 'pending'.
    """
    settings = crossfade.settings()
    with warehouse.read() as con:
        if not table_exists(con, "eval.offline_lists"):
            raise dg.Failure("eval.offline_lists is missing: materialise eval/offline_metrics first")
        as_of = scalar(con, "select max(as_of) from eval.offline_lists")
        known = set(con.execute("select distinct model from eval.offline_lists").pl()["model"].to_list())
        pairs = _pairs(config.pairs, known)
        models = sorted({name for pair in pairs for name in pair} | {config.pointwise_model})
        if not set(models) <= known:
            raise dg.Failure(f"models {sorted(set(models) - known)} are not in eval.offline_lists (has {sorted(known)})")
        profiles = _with_profile_text(con.execute(
            "select user_id, profile_json as narrative_json, facts_json from enrich.user_profiles "
            "where status <> 'no_activity' order by user_id").pl())
        eligible = con.execute(
            "select distinct user_id from eval.offline_lists where model in (select unnest($models))",
            {"models": models}).pl().join(profiles.select("user_id"), on="user_id", how="semi")["user_id"]
        users = judge.sample_cohort(eligible, settings.judge_users, settings.seed)
        items = con.execute("select item_id, item_type, title, description, genres from raw.items "
                            "where item_type = $t", {"t": settings.target_type}).pl()
        frames = FeatureFrames(**readers.feature_tables(con))
        features_as_of = frames.splits.filter(pl.col("split") == "holdout")["end_at"].max()
        # Agreement with the holdout only means something when the lists were cut where the features are.
        targets = (judge_panel.holdout_targets(frames, settings.target_type)
                   if features_as_of is not None and features_as_of.date() == as_of else None)
        compared = (judge_panel.pairwise_panel(_shown(con, models, eligible, config.list_length), targets, pairs,
                                               settings.judge_pairwise_panel_users, settings.seed)
                    if targets is not None and settings.judge_pairwise_panel_users
                    else pl.DataFrame(schema=judge_panel.COMPARED_SCHEMA))
        shown = sorted(set(users) | set(compared["user_id"].to_list()))
        lists = _lists(con, models, shown, config.list_length)
        found_items = readers.item_text_embeddings(con)
        item_vectors = found_items[0] if found_items is not None else None
        user_vectors = readers.profile_embeddings(con)
    reference = judge_panel.panel(frames, settings.target_type, profiles["user_id"],
                                  max(settings.judge_reference_users, settings.judge_panel_users), settings.seed)
    panel = judge_panel.subset(reference, settings.judge_panel_users, settings.seed)
    panel_requests, panel_described = judge_panel.requests(panel, profiles, items)
    pairwise_requests, pairwise_described = judge.pairwise_panel_requests(compared, profiles, lists)
    cohort = profiles.join(pl.Series("user_id", users, pl.String).to_frame(), on="user_id", how="semi")
    requests, described = judge.cohort_requests(cohort, lists, pairs, config.pointwise_model, config.pointwise_items)
    started = time.perf_counter()
    with llm.chat_model() as model:
        validating = panel_requests + pairwise_requests  # asked in full first, so the budget never cuts them
        asked = validating + requests
        cache = known_answers(warehouse, model, asked)
        budget = settings.llm_call_budget + len(validating)
        batch = ask(model, asked, cache, settings.model_copy(update={"llm_call_budget": budget}), warehouse)
    judged = (pl.concat([panel_described, pairwise_described, described], how="diagonal_relaxed")
              .join(judge.answers_frame(batch.results), on="entity_id", how="left")
              .with_columns(pl.col("status").fill_null("pending")))
    judged = judged.with_columns(sbert_sim=judge_panel.cosine(judged, user_vectors, item_vectors))
    panel_rows = judged.filter(pl.col("kind") == "panel")
    judged = judged.filter(pl.col("kind") != "panel").drop("label")
    pointwise = judged.filter(pl.col("kind") == "pointwise")
    pointwise = (pointwise.join(targets.with_columns(in_holdout=pl.lit(True)), on=["user_id", "item_id"], how="left")
                 .with_columns(pl.col("in_holdout").fill_null(False)) if targets is not None
                 else pointwise.with_columns(in_holdout=pl.lit(None, dtype=pl.Boolean)))
    pairwise = judge.order_winners(judged.filter(pl.col("kind").is_in(judge.PAIRWISE_KINDS)))
    combined = judge.combine_orders(pairwise)
    pairwise = pairwise.join(combined.select("user_id", "kind", "model_a", "model_b", "final_winner"),
                             on=["user_id", "kind", "model_a", "model_b"], how="left")
    rows = (pl.concat([panel_rows.rename({"label": "in_holdout"}), pointwise, pairwise], how="diagonal_relaxed")
            .with_columns(as_of=pl.lit(as_of)))
    validation = judge_panel.validation(panel_rows, pairwise, lists, targets, pairs, user_vectors, item_vectors,
                                        panel["user_id"].n_unique(), settings.seed, reference=reference)
    combined = combined.filter(pl.col("kind") == "pairwise")  # the cohort's win rates; the panel's users are chosen
    rates = judge.summary(pointwise, combined)
    with warehouse.write("eval.judge_scores") as con:
        LLMCache(con).put_many(cache.new_rows)
        for name, frame in (("judged", rows), ("validation", validation)):
            con.register(name, frame.to_arrow())
        run_sql(con, "eval/judge_scores")
        run_sql(con, "eval/judge_validation", {"as_of": as_of})
        for name in ("judged", "validation"):
            con.unregister(name)
        by_status = con.execute("select kind, status, count(*) as judgements from eval.judge_scores "
                                "group by 1, 2 order by 1, 2").pl()
    seconds = time.perf_counter() - started
    verdicts = judge_panel.verdicts(validation)
    context.log.info(f"eval.judge_scores: {rows.height} judgements ({panel.height} on the panel) for {len(users)} "
                     f"users, {batch.calls} LLM calls, {batch.cache_hits} cache hits, {len(batch.deferred)} left for "
                     f"the next run ({seconds:.1f} s); " + "; ".join(f"{key}: {value}" for key, value in verdicts.items()))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows.height, "as_of": str(as_of), "cohort_users": len(users),
        "panel_users": panel["user_id"].n_unique(), "pairs_judged": ", ".join(f"{a}:{b}" for a, b in pairs),
        **{key: rates[key] for key in ("positive_rate", "tie_rate", "holdout_agreement", "order_consistency")
           if key in rates},
        **verdicts,
        "judge_validation": dg.MetadataValue.md(markdown_table(validation)),
        "summary": dg.MetadataValue.json(json.loads(json.dumps(rates))),
        "win_rates": dg.MetadataValue.md(markdown_table(pl.DataFrame(rates["pairs"]))),
        "judgements_by_status": dg.MetadataValue.md(markdown_table(by_status)),
        **batch.metadata(), "budget": budget, "llm_model": model.name, **llm.describe(),
    })


@dg.asset_check(asset=eval_judge_scores, blocking=True, name="eval_judge_scores_suite",
                description="Gate: known kinds, statuses and verdicts; each request judged once; pairs in both "
                            "orders; eval.judge_validation's AUCs and agreements in [0, 1] inside their intervals, "
                            "the reference judge measured on a non-empty panel.")
def eval_judge_scores_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = check(con, "eval.judge_scores", crossfade.thresholds())
        if table_exists(con, "eval.judge_validation"):
            report.merge(check(con, "eval.judge_validation", crossfade.thresholds()))
    return gate(report, warehouse, "eval.judge_scores")
