"""Suites for the enrichment tables: floor coverage, LLM failure rate, the LLM's measured quality and the use that
follows it, embedding dimension, finite unit vectors."""
from __future__ import annotations

import duckdb
import great_expectations.expectations as gxe
import polars as pl

from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame
from warehouse.store import table_exists

VERSION = "enrich/v3"  # v3: the LLM's output is used only where its kind passed enrich.llm_quality
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2: the contract of enrich.text_embeddings
NORM_TOLERANCE = 1e-3  # float32 vectors normalised by the encoder land within 1e-6 of 1
ITEM_STATUSES = ["ok", "failed", "pending"]
USER_STATUSES = ["ok", "failed", "pending", "no_activity"]
TOPIC_SOURCES = ["llm", "taxonomy", "zero_shot"]
FLOOR_SOURCES = ["taxonomy", "zero_shot"]
PROFILE_SOURCES = ["llm", "template"]
MAX_TOPICS = 3
# enrich.llm_quality: the metrics each LLM output kind is measured by (models/llm_quality.py's METRICS)
LLM_METRICS = {"item_topics": ("topic_accuracy", "json_validity"),
               "user_profiles": ("profile_faithfulness", "json_validity")}


def _failure_rate_limit(limits: Thresholds, max_failure_rate: float | None) -> float:
    if max_failure_rate is not None:
        return max_failure_rate
    return limits.llm_max_failure_rate


def _failure_rate(table: str, statuses: pl.Series, limit: float, min_answers: int) -> Report:
    """Of the answers the table holds (ok or failed), the failed share, against the limit."""
    answered = int(statuses.is_in(["ok", "failed"]).sum())
    failed = int((statuses == "failed").sum())
    # Below min_answers one failure is no rate yet: the limit applies once enough answers are stored.
    rates = pl.DataFrame({
        "count_answered": [answered], "count_failed": [failed],
        "failure_rate": [failed / answered if answered >= min_answers else None],
    }, schema_overrides={"failure_rate": pl.Float64})
    return validate_frame(table, rates, [
        gxe.ExpectColumnValuesToBeBetween(column="failure_rate", min_value=0, max_value=limit),
    ], VERSION, batch="failure_rate")


def llm_quality_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds, kinds: tuple[str, ...] = tuple(LLM_METRICS)
                      ) -> Report:
    """enrich.llm_quality's contract for these kinds: every metric of the kind measured once, shares in [0, 1],
    answer counts not negative, `passed` exactly when enough answers reach the floor, and the kind used
    (`is_used`) only when every metric of it passed."""
    keys = [f"{kind}:{metric}" for kind in kinds for metric in LLM_METRICS[kind]]
    if not table_exists(con, "enrich.llm_quality"):
        report = Report("enrich.llm_quality", VERSION, checked=1)
        report.failed.append({"batch": "rows", "expectation": "enrich.llm_quality exists (materialise enrich/item_topics "
                              "and enrich/user_profiles)", "column": None, "unexpected_count": len(keys)})
        return report
    rows = con.execute(
        """
        with wanted as (select unnest($keys::varchar[]) as key)
        select w.key, q.kind is not null as is_measured, q.value, q.count_answers, q.floor,
               q.passed = coalesce(q.value is not null and q.count_answers >= q.min_answers and q.value >= q.floor,
                                   false) as is_verdict_right,
               q.is_used = bool_and(q.passed) over (partition by q.kind) as is_decision_right
        from wanted as w
        left join enrich.llm_quality as q on w.key = q.kind || ':' || q.metric
        """,
        {"keys": keys},
    ).pl()
    return validate_frame("enrich.llm_quality", rows, [
        gxe.ExpectColumnValuesToBeUnique(column="key"),
        gxe.ExpectColumnValuesToBeInSet(column="is_measured", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=1),  # null: nothing to measure
        gxe.ExpectColumnValuesToBeBetween(column="count_answers", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="floor", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="is_verdict_right", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="is_decision_right", value_set=[True]),
    ], VERSION, batch=",".join(kinds))


def item_topics_decision(con: duckdb.DuckDBPyConnection) -> Report:
    """`topics` follows the decision: the LLM's (topics_source 'llm') only where its answer is ok and the kind is
    used in enrich.llm_quality for the table's model and prompt version; everywhere else the floor's."""
    return _decision_check(
        con, "enrich.item_topics", "item_id", "item_topics",
        agrees="""case when e.topics_source = 'llm' then q.is_used and e.status = 'ok' and e.topics = e.llm_topics
                       else e.topics = e.floor_topics and e.topics_source = e.floor_source
                            and not coalesce(q.is_used and e.status = 'ok' and len(e.llm_topics) > 0, false) end""",
        without_quality="e.topics_source <> 'llm'")


def _decision_check(con: duckdb.DuckDBPyConnection, table: str, key: str, kind: str, agrees: str,
                    without_quality: str) -> Report:
    """Every row of `table` (alias e) agrees with its kind's decision in enrich.llm_quality (alias q, per model and
    prompt version): `agrees` is the SQL condition; `without_quality` the one before the table exists."""
    if table_exists(con, "enrich.llm_quality"):
        rows = con.execute(
            f"""
            with quality as (
                select model, prompt_version, coalesce(bool_and(is_used), false) as is_used
                from enrich.llm_quality where kind = $kind group by all
            )
            select e.{key}, coalesce({agrees}, false) as agrees_with_decision
            from {table} as e
            left join quality as q on e.model = q.model and e.prompt_version = q.prompt_version
            """, {"kind": kind}).pl()
    else:
        rows = con.execute(f"select e.{key}, {without_quality} as agrees_with_decision from {table} as e").pl()
    return validate_frame(table, rows, [
        gxe.ExpectColumnValuesToBeInSet(column="agrees_with_decision", value_set=[True]),
    ], VERSION, batch="llm decision")


def item_topics_suite(
    con: duckdb.DuckDBPyConnection, limits: Thresholds, max_failure_rate: float | None = None
) -> Report:
    """Every item of the graph and target types has topics (the floor's at least); answers are whole; failures
    stay under the limit."""
    types = sorted(set(limits.graph_types) | {limits.target_type})
    rows = con.execute(
        """
        select i.item_id, t.item_id is not null as is_listed, t.status,
               coalesce(len(t.topics) between 1 and $max_topics, false) as has_topics,
               coalesce(len(t.floor_topics) between 1 and $max_topics, false) as has_floor_topics,
               coalesce(t.topics_source, 'none') as topics_source, coalesce(t.floor_source, 'none') as floor_source,
               t.status <> 'ok' or (len(t.llm_topics) between 1 and $max_topics and t.summary <> ''
                                    and t.language is not null) as is_whole_answer
        from raw.items as i
        left join enrich.item_topics as t on i.item_id = t.item_id
        where i.item_type in (select unnest($types::varchar[]))
        """,
        {"types": types, "max_topics": MAX_TOPICS},
    ).pl()
    extra = con.execute(
        "select count(*) from enrich.item_topics as t anti join raw.items as i on i.item_id = t.item_id"
    ).fetchall()[0][0]
    report = validate_frame("enrich.item_topics", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="is_listed", value_set=[True]),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=ITEM_STATUSES),
        gxe.ExpectColumnValuesToBeInSet(column="has_topics", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="has_floor_topics", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="topics_source", value_set=TOPIC_SOURCES),
        gxe.ExpectColumnValuesToBeInSet(column="floor_source", value_set=FLOOR_SOURCES),
        gxe.ExpectColumnValuesToBeInSet(column="is_whole_answer", value_set=[True]),
    ], VERSION)
    if extra:
        report.failed.append({"expectation": "every listed item is in raw.items", "column": "item_id", "unexpected_count": extra})
    report.merge(_failure_rate("enrich.item_topics", rows["status"], _failure_rate_limit(limits, max_failure_rate),
                                limits.llm_min_answers_judged))
    report.merge(llm_quality_suite(con, limits, ("item_topics",)))
    report.merge(item_topics_decision(con))
    return report


def user_profiles_decision(con: duckdb.DuckDBPyConnection) -> Report:
    """`profile_json` follows the decision: the narrative (profile_source 'llm') only where it is ok and the kind is
    used in enrich.llm_quality for the table's model and prompt version; the template (or nothing, for users with
    nothing to describe) everywhere else."""
    return _decision_check(
        con, "enrich.user_profiles", "user_id", "user_profiles",
        agrees="""case when e.profile_source = 'llm' then q.is_used and e.status = 'ok'
                            and e.profile_json = e.narrative_json
                       when e.profile_source = 'template' then e.profile_json = e.template_json
                       else e.profile_json is null end""",
        without_quality="coalesce(e.profile_source, '') <> 'llm'")


def user_profiles_suite(
    con: duckdb.DuckDBPyConnection, limits: Thresholds, max_failure_rate: float | None = None
) -> Report:
    """Facts for every user; every active user has a profile with the seven keys non-empty (the template at
    least) and says where it came from; failures stay under the limit."""
    rows = con.execute(
        """
        with profiles as (
            select *, json_extract_string(profile_json, ['listening_habits', 'engagement_depth', 'format_preference',
                       'exploration_vs_specialization', 'cross_disciplinary_curiosity']) as sentences
            from enrich.user_profiles
        )
        select u.user_id, u.is_active, p.user_id is not null as has_row, p.status,
               p.facts_json is not null and (not u.is_active or p.status <> 'no_activity') as has_facts,
               p.status <> 'ok' or p.narrative_json is not null as is_whole_answer,
               not u.is_active or coalesce(
                   list_bool_and(list_transform(p.sentences, text -> trim(coalesce(text, '')) <> ''))
                   and json_array_length(p.profile_json, '$.per_episode_interests') > 0
                   and json_array_length(p.profile_json, '$.interests') > 0, false) as has_full_profile,
               case when u.is_active then coalesce(p.profile_source, 'none') else 'not_active' end as profile_source
        from features.user_stats as u
        left join profiles as p on u.user_id = p.user_id
        """
    ).pl()
    report = validate_frame("enrich.user_profiles", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="has_row", value_set=[True]),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=USER_STATUSES),
        gxe.ExpectColumnValuesToBeInSet(column="has_facts", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="is_whole_answer", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="has_full_profile", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="profile_source", value_set=[*PROFILE_SOURCES, "not_active"]),
    ], VERSION)
    report.merge(_failure_rate("enrich.user_profiles", rows["status"], _failure_rate_limit(limits, max_failure_rate),
                                limits.llm_min_answers_judged))
    report.merge(llm_quality_suite(con, limits, ("user_profiles",)))
    report.merge(user_profiles_decision(con))
    return report


def text_embeddings_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """One finite unit vector of 384 per item and per active user.

    Users are encoded at most `embed_user_budget` a run, so while a large population is being caught
    up, an active user may still lack a vector; at least min(active users, budget) of them must have one.
    """
    vectors = con.execute(
        """
        select entity, entity_id, dim, len(embedding) as length,
               list_bool_and(list_transform(embedding, value -> isfinite(value))) as is_finite,
               sqrt(list_sum(list_transform(embedding, value -> value::double * value))) as norm
        from enrich.text_embeddings
        """
    ).pl()
    report = validate_frame("enrich.text_embeddings", vectors, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["entity", "entity_id"]),
        gxe.ExpectColumnValuesToBeInSet(column="entity", value_set=["item", "user"]),
        gxe.ExpectColumnValuesToBeInSet(column="dim", value_set=[EMBEDDING_DIM]),
        gxe.ExpectColumnValuesToBeInSet(column="length", value_set=[EMBEDDING_DIM]),
        gxe.ExpectColumnValuesToBeInSet(column="is_finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=1 - NORM_TOLERANCE, max_value=1 + NORM_TOLERANCE),
    ], VERSION)
    coverage = con.execute(
        """
        select i.item_id as entity_id, e.entity_id is not null as has_embedding
        from raw.items as i
        left join enrich.text_embeddings as e on e.entity = 'item' and i.item_id = e.entity_id
        """
    ).pl()
    report.merge(validate_frame("enrich.text_embeddings", coverage, [
        gxe.ExpectColumnValuesToBeInSet(column="has_embedding", value_set=[True]),
    ], VERSION, batch="item coverage"))
    users = con.execute(
        """
        select u.user_id as entity_id, e.entity_id is not null as has_embedding
        from features.user_stats as u
        left join enrich.text_embeddings as e on e.entity = 'user' and u.user_id = e.entity_id
        where u.is_active
        """
    ).pl()
    mostly = min(1.0, limits.embed_user_budget / users.height) if users.height else 1.0
    report.merge(validate_frame("enrich.text_embeddings", users, [
        gxe.ExpectColumnValuesToBeInSet(column="has_embedding", value_set=[True], mostly=mostly),
    ], VERSION, batch="user coverage"))
    return report


SUITES = {
    "enrich.llm_quality": llm_quality_suite,
    "enrich.item_topics": item_topics_suite,
    "enrich.user_profiles": user_profiles_suite,
    "enrich.text_embeddings": text_embeddings_suite,
}
