"""Suites for the LLM judge's tables: judgements (known kinds, statuses and verdicts, one per request, both orders)
and the judge's validation (AUCs and agreements in [0, 1] inside their intervals, the reference judge measured)."""
from __future__ import annotations

import duckdb
import great_expectations.expectations as gxe

from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame

VERSION = "eval/v2"
STATUSES = ["ok", "failed", "pending"]
VERDICTS = ["aligned", "not_aligned", "A", "B", "tie"]
JUDGES = ["llm", "sbert_sim"]
REFERENCE_JUDGE = "sbert_sim"  # needs no LLM: it scores the panel whenever the panel has users
MIN_PAIRS = 10  # models.judge_panel.MIN_PAIRS: fewer pairs are never called informative


def judge_scores_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """Judgements of one as-of date: each request once, verdicts only on answered rows, pairs judged in both orders,
    P(aligned) a probability."""
    rows = con.execute(
        """
        select
            kind, status, verdict, as_of, p_aligned,
            kind || '|' || coalesce(item_id, '') || '|' || coalesce(model_a, '') || '|' || coalesce(model_b, '')
                || '|' || coalesce("order", '') || '|' || user_id as request_key,
            (status = 'ok') = (verdict is not null) as verdict_matches_status,
            kind not in ('pairwise', 'panel_pairwise')
                or count(*) over (partition by kind, user_id, model_a, model_b) = 2 as has_both_orders,
            p_aligned is null or kind not in ('pairwise', 'panel_pairwise') as p_aligned_only_pointwise
        from eval.judge_scores
        """).pl()
    return validate_frame("eval.judge_scores", rows, [
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["pointwise", "pairwise", "panel", "panel_pairwise"]),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=STATUSES),
        gxe.ExpectColumnValuesToBeInSet(column="verdict", value_set=VERDICTS),
        gxe.ExpectColumnValuesToBeUnique(column="request_key"),
        gxe.ExpectColumnValuesToBeInSet(column="verdict_matches_status", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="has_both_orders", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="p_aligned", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="p_aligned_only_pointwise", value_set=[True]),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="as_of", min_value=0, max_value=1),
    ], VERSION)


def judge_validation_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """The judge's validity of one as-of date: one row per (judge, metric, pair); values and interval bounds in
    [0, 1] with ci_low <= value <= ci_high; a value exactly when something was scored; `informative` exactly when
    the interval excludes 0.5 on MIN_PAIRS pairs or more; the reference judge scored the panel when it has users."""
    rows = con.execute(
        """
        select
            judge, metric, value, ci_low, ci_high, pairs, users, as_of,
            judge || '|' || metric || '|' || coalesce(model_a, '') || '|' || coalesce(model_b, '') as row_key,
            coalesce(ci_low <= value and value <= ci_high, value is null and ci_low is null and ci_high is null)
                as value_inside_interval,
            (value is not null) = (pairs > 0) as value_matches_pairs,
            metric = 'agreement' or pairs <= users as one_pair_per_panel_user,
            informative is not distinct from (case when value is not null then
                pairs >= $min_pairs and not (ci_low <= 0.5 and 0.5 <= ci_high) end) as informative_matches_interval,
            not (metric <> 'agreement' and judge = $reference and users > 0 and pairs = 0) as reference_scored_panel
        from eval.judge_validation
        """, {"min_pairs": MIN_PAIRS, "reference": REFERENCE_JUDGE}).pl()
    expectations = [
        gxe.ExpectColumnValuesToBeInSet(column="judge", value_set=JUDGES),
        gxe.ExpectColumnValuesToBeInSet(column="metric", value_set=["auc", "auc_reference", "agreement"]),
        gxe.ExpectColumnValuesToBeUnique(column="row_key"),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="as_of", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="pairs", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="users", min_value=0),
    ]
    expectations += [gxe.ExpectColumnValuesToBeBetween(column=name, min_value=0.0, max_value=1.0)
                     for name in ("value", "ci_low", "ci_high")]
    expectations += [gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[True])
                     for name in ("value_inside_interval", "value_matches_pairs", "one_pair_per_panel_user",
                                  "informative_matches_interval", "reference_scored_panel")]
    return validate_frame("eval.judge_validation", rows, expectations, VERSION)


SUITES = {"eval.judge_scores": judge_scores_suite, "eval.judge_validation": judge_validation_suite}
