"""Judge stage: the profile-aware LLM judge on a seeded cohort, pointwise and pairwise (both orders), cached."""

import json
import time

import dagster as dg
import duckdb
import polars as pl

from assets.common import WRITES_TAG, markdown_table
from assets.evaluation import eval_offline_metrics
from models import judge
from models.enrichment import EnrichRequest, EnrichResult, run_batch
from pipelines.llm import LLMBackend
from pipelines.resources import Crossfade, Warehouse
from warehouse.enrichment_tables import BufferedCache, cached_answers, table_exists
from warehouse.llm_cache import LLMCache
from warehouse.store import run_sql, scalar


class JudgeRun(dg.Config):
    pairs: list[str] = ["two_tower_hgnn:popularity"]  # 'model_a:model_b' from eval.offline_lists
    pointwise_model: str = "two_tower_hgnn"  # whose top items are judged one by one
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


def _requests(cohort: pl.DataFrame, lists: pl.DataFrame, pairs: list[tuple[str, str]], config: JudgeRun
              ) -> tuple[list[EnrichRequest], pl.DataFrame]:
    """Requests user by user (pairwise orders side by side, then pointwise), so a spent budget leaves whole
    users for the next run; and one frame row per request describing it."""
    requests, rows = [], []
    for user_id, profile in cohort.select("user_id", "profile").iter_rows():
        mine = lists.filter(pl.col("user_id") == user_id)
        by_model = {model: rows_.sort("rank").to_dicts() for (model,), rows_ in mine.group_by("model")}
        for model_a, model_b in pairs:
            if model_a not in by_model or model_b not in by_model:
                continue
            for order, request in judge.pairwise_pair(user_id, profile, model_a, model_b, by_model):
                requests.append(request)
                rows.append({"entity_id": request.entity_id, "kind": "pairwise", "user_id": user_id, "item_id": None,
                             "model": None, "model_a": model_a, "model_b": model_b, "order": order})
        for item in by_model.get(config.pointwise_model, [])[: config.pointwise_items]:
            request = judge.pointwise_request(user_id, profile, item)
            requests.append(request)
            rows.append({"entity_id": request.entity_id, "kind": "pointwise", "user_id": user_id,
                         "item_id": item["item_id"], "model": config.pointwise_model, "model_a": None,
                         "model_b": None, "order": None})
    schema = {name: pl.String for name in ("entity_id", "kind", "user_id", "item_id", "model", "model_a", "model_b",
                                           "order")}
    return requests, pl.DataFrame(rows, schema=schema)


def _answers(results: list[EnrichResult]) -> pl.DataFrame:
    def verdict(result: EnrichResult) -> str | None:
        if result.status != "ok" or result.output is None:
            return None
        if "aligned" in result.output:
            return "aligned" if result.output["aligned"] else "not_aligned"
        return result.output["verdict"]

    return pl.DataFrame({
        "entity_id": [r.entity_id for r in results],
        "verdict": [verdict(r) for r in results],
        "confidence": [(r.output or {}).get("confidence") for r in results],
        "rationale": [(r.output or {}).get("rationale") or r.error for r in results],
        "status": [r.status for r in results],
        "llm_model": [r.model for r in results],
        "prompt_version": [r.prompt_version for r in results],
        "input_hash": [r.input_hash for r in results],
    }, schema={"entity_id": pl.String, "verdict": pl.String, "confidence": pl.String, "rationale": pl.String,
               "status": pl.String, "llm_model": pl.String, "prompt_version": pl.String, "input_hash": pl.String})


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
            "select user_id, narrative_json, facts_json from enrich.user_profiles where user_id in (select unnest($u))",
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
    requests, described = _requests(cohort.sort("user_id"), lists, pairs, config)
    started = time.perf_counter()
    with llm.chat_model() as model:
        with warehouse.read() as con:
            keys = list(dict.fromkeys((model.name, r.prompt_version, r.input_hash) for r in requests))
            cache = BufferedCache(cached_answers(con, keys))
        try:
            batch = run_batch(model, requests, cache, settings.llm_call_budget, seed=settings.seed)
        finally:
            with warehouse.write() as con:
                LLMCache(con).put_many(cache.new_rows)  # paid-for answers are kept even if the run stops here
    judged = described.join(_answers(batch.results), on="entity_id", how="left").with_columns(
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
