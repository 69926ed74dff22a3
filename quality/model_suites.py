"""Suites for the model stage: unit item vectors, sane offline metrics, one promoted model, the promotion gate."""
from __future__ import annotations

import math
from typing import Any

import duckdb
import great_expectations.expectations as gxe
import polars as pl

from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame
from warehouse import registry

VERSION = "models/v1"
GATE_METRIC = ("cold", "hr@10")  # the slice and metric the promotion gate compares
SLICES = ["all", "warm", "cold", "long_tail"]


def hgnn_item_embeddings_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """One finite unit vector per item of the graph and target types, all of one width, from one model version."""
    types = sorted({*limits.graph_types, limits.target_type})
    rows = con.execute(
        """
        select e.item_id, e.model_version, len(e.embedding) as dim,
               sqrt(list_sum(list_transform(e.embedding, v -> v * v))) as norm,
               list_bool_and(list_transform(e.embedding, v -> isfinite(v))) as is_finite,
               (select count(*) from raw.items where item_type in (select unnest($types))) as count_items
        from models.hgnn_item_embeddings as e
        """, {"types": types}).pl()
    expected = int(rows["count_items"][0]) if rows.height else -1
    return validate_frame("models.hgnn_item_embeddings", rows, [
        gxe.ExpectTableRowCountToEqual(value=expected),  # inductive: every item, edges or not
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="is_finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=0.99, max_value=1.01),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="dim", min_value=1, max_value=1),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="model_version", min_value=1, max_value=1),
    ], VERSION)


def offline_metrics_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """Every model scored on every slice, values in [0, 1], one as-of date and one bundled model version."""
    rows = con.execute(
        """
        select model, slice, metric, value, std_error, users, as_of, model_version,
               count(distinct slice) over (partition by model) as count_slices
        from eval.offline_metrics
        """).pl()
    return validate_frame("eval.offline_metrics", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="slice", value_set=SLICES),
        gxe.ExpectColumnValuesToBeBetween(column="count_slices", min_value=len(SLICES), max_value=len(SLICES)),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["model", "slice", "metric"]),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="as_of", min_value=1, max_value=1),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="model_version", min_value=1, max_value=1),
    ], VERSION)


def registry_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """Known statuses, unique versions, at most one promoted model."""
    rows = con.execute(
        "select model_version, status, count(*) filter (where status = 'promoted') over () as count_promoted "
        "from models.registry").pl()
    return validate_frame("models.registry", rows, [
        gxe.ExpectColumnValuesToBeUnique(column="model_version"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(registry.STATUSES)),
        gxe.ExpectColumnValuesToBeBetween(column="count_promoted", min_value=0, max_value=1),
    ], VERSION)


def gate_facts(candidate: dict[str, Any], incumbent: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers behind the promotion verdict, from two registry rows (metrics as registered)."""
    slice_name, metric = GATE_METRIC
    ours = float(candidate["metrics"].get(slice_name, {}).get(metric, float("nan")))
    popularity = float(candidate["metrics"].get("reference", {}).get("popularity", {})
                       .get(slice_name, {}).get(metric, float("nan")))
    promoted = float(incumbent["metrics"].get(slice_name, {}).get(metric, float("nan"))) if incumbent else None
    return {
        "model_version": candidate["model_version"],
        "losses_finite": bool(candidate["metrics"].get("training", {}).get("losses_finite", False)),
        f"{slice_name}_{metric}": ours,
        f"popularity_{slice_name}_{metric}": popularity,
        "promoted_version": incumbent["model_version"] if incumbent else None,
        f"promoted_{slice_name}_{metric}": promoted,
        # Relative change against the promoted model; 0 when there is none to compare with.
        "change_vs_promoted": (ours / promoted - 1.0) if promoted else 0.0,
        "margin_over_popularity": ours - popularity,
    }


def promotion_gate(con: duckdb.DuckDBPyConnection, model_version: str, tolerance: float) -> tuple[Report, dict]:
    """(report, facts): finite losses, beats Popularity on cold HR@10, within `tolerance` (relative) of the
    promoted model's cold HR@10. The candidate is compared with the promoted row, never with itself."""
    candidate = registry.get(con, model_version)
    if candidate is None:
        raise ValueError(f"{model_version!r} is not in models.registry; materialise models/two_tower first")
    incumbent = registry.promoted(con)
    if incumbent is not None and incumbent["model_version"] == model_version:
        incumbent = None
    facts = gate_facts(candidate, incumbent)
    frame = pl.DataFrame([{key: value for key, value in facts.items() if not isinstance(value, str)}])
    frame = frame.with_columns(pl.col(pl.Float64).fill_nan(None))
    report = validate_frame("models.registry", frame, [
        gxe.ExpectColumnValuesToBeInSet(column="losses_finite", value_set=[True]),
        gxe.ExpectColumnValuesToNotBeNull(column="margin_over_popularity"),
        gxe.ExpectColumnValuesToBeBetween(column="margin_over_popularity", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="change_vs_promoted", min_value=-tolerance),
    ], VERSION, batch="promotion_gate")
    return report, facts


def gate_reason(report: Report, facts: dict[str, Any], tolerance: float) -> str:
    """One sentence a person reads in models.registry.reason."""
    slice_name, metric = GATE_METRIC
    ours = facts[f"{slice_name}_{metric}"]
    parts = []
    if not facts["losses_finite"]:
        parts.append("training losses were not finite")
    if not (facts["margin_over_popularity"] is not None and facts["margin_over_popularity"] > 0):
        parts.append(f"{slice_name} {metric} {_fmt(ours)} does not beat Popularity's "
                     f"{_fmt(facts[f'popularity_{slice_name}_{metric}'])}")
    if facts["change_vs_promoted"] < -tolerance:
        parts.append(f"{slice_name} {metric} {_fmt(ours)} is {-facts['change_vs_promoted']:.1%} below promoted "
                     f"{facts['promoted_version']} ({_fmt(facts[f'promoted_{slice_name}_{metric}'])}; "
                     f"tolerance {tolerance:.0%})")
    return "; ".join(parts) if parts else ("passed" if report.success else report.markdown())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


SUITES = {
    "models.hgnn_item_embeddings": hgnn_item_embeddings_suite,
    "eval.offline_metrics": offline_metrics_suite,
    "models.registry": registry_suite,
}
