"""Suite for the LLM judge's table: known kinds, statuses and verdicts, one judgement per request, both orders."""
from __future__ import annotations

import duckdb
import great_expectations.expectations as gxe

from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame

VERSION = "eval/v1"
STATUSES = ["ok", "failed", "pending"]
VERDICTS = ["aligned", "not_aligned", "A", "B", "tie"]


def judge_scores_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """Judgements of one as-of date: each request once, verdicts only on answered rows, pairs judged in both orders."""
    rows = con.execute(
        """
        select
            kind, status, verdict, as_of,
            coalesce(item_id, '') || '|' || coalesce(model_a, '') || '|' || coalesce(model_b, '') || '|'
                || coalesce("order", '') || '|' || user_id as request_key,
            (status = 'ok') = (verdict is not null) as verdict_matches_status,
            kind <> 'pairwise' or count(*) over (partition by user_id, model_a, model_b) = 2 as has_both_orders
        from eval.judge_scores
        """).pl()
    return validate_frame("eval.judge_scores", rows, [
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["pointwise", "pairwise"]),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=STATUSES),
        gxe.ExpectColumnValuesToBeInSet(column="verdict", value_set=VERDICTS),
        gxe.ExpectColumnValuesToBeUnique(column="request_key"),
        gxe.ExpectColumnValuesToBeInSet(column="verdict_matches_status", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="has_both_orders", value_set=[True]),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="as_of", min_value=0, max_value=1),
    ], VERSION)


SUITES = {"eval.judge_scores": judge_scores_suite}
