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
GATE_METRIC = ("cold", "hr@10")  # the slice and metric the promotion gate prefers
FALLBACK_SLICE = "all"  # compared on instead when the cold slice is too small
# Below 10 users one hit moves HR@10 by 0.1 or more: the comparison with Popularity is noise, so the
# gate falls back to all users (and records it) rather than promote or reject on a handful of people.
MIN_GATE_USERS = 10
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
    """Every model reported on every slice of both splits, values in [0, 1], one as-of date and one bundled model version.

    A slice without users (no cold user with a holdout target, no long-tail target, ...) is reported with
    users 0 and null values and passes; a slice with users must have values, and some user must have been
    scored (slice 'all'), or there was nothing to evaluate.
    """
    rows = con.execute(
        """
        select split, model, slice, metric, value, std_error, users, as_of, model_version,
               count(distinct slice) over (partition by split, model) as count_slices,
               value is null and users > 0 as is_unscored,
               coalesce(max(users) filter (where slice = 'all') over (partition by split, model), 0)
                   as count_users_scored
        from eval.offline_metrics
        """).pl()
    return validate_frame("eval.offline_metrics", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="is_unscored", value_set=[False]),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="slice", value_set=SLICES),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["valid", "holdout"]),
        gxe.ExpectColumnValuesToBeBetween(column="count_slices", min_value=len(SLICES), max_value=len(SLICES)),
        gxe.ExpectColumnValuesToBeBetween(column="count_users_scored", min_value=1),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "model", "slice", "metric"]),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="as_of", min_value=1, max_value=1),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="model_version", min_value=1, max_value=1),
    ], VERSION)


def empty_slices(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Slices eval.offline_metrics reports without users, for the asset's metadata and the run summary."""
    return [name for (name,) in con.execute(
        "select slice from eval.offline_metrics where split = 'holdout' group by slice having max(users) = 0 "
        "order by slice").fetchall()]


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


def gate_basis(metrics: dict[str, Any]) -> dict[str, Any]:
    """Which slice the promotion gate compares on, with its users and the reason, from registered metrics.

    The cold slice when it has at least MIN_GATE_USERS users with a validation target; otherwise all users
    (a world whose cold users touch nothing of the target type during validation still gets a verdict, and
    says so); with no user at all there is nothing to compare and `slice` is None.
    """
    preferred, metric = GATE_METRIC
    users = {name: _slice_users(metrics.get(name, {}), metric) for name in (preferred, FALLBACK_SLICE)}
    if users[preferred] is None or users[preferred] >= MIN_GATE_USERS:
        return {"slice": preferred, "metric": metric, "users": users[preferred],
                "reason": f"{preferred} slice has {_count(users[preferred])} users with a validation target"}
    short = (f"{preferred} slice has {users[preferred]} users with a validation target "
             f"(fewer than {MIN_GATE_USERS})")
    if users[FALLBACK_SLICE]:
        return {"slice": FALLBACK_SLICE, "metric": metric, "users": users[FALLBACK_SLICE],
                "reason": f"{short}: compared on {FALLBACK_SLICE} users ({users[FALLBACK_SLICE]}) instead"}
    return {"slice": None, "metric": metric, "users": 0,
            "reason": f"{short} and no user has a target-type event in the validation period: nothing to compare "
                      "with the baselines; land events of the target type after the cut or lengthen valid_days"}


def gate_facts(candidate: dict[str, Any], incumbent: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers behind the promotion verdict, from two registry rows (metrics as registered).

    Keys are stable whatever slice `gate_basis` picks: `gate_slice` names it, `hr@10` is the candidate's.
    """
    basis = gate_basis(candidate["metrics"])
    slice_name, metric = basis["slice"], basis["metric"]
    ours = _value(candidate["metrics"], slice_name, metric)
    reference = candidate["metrics"].get("reference", {})
    popularity = _value(reference.get("popularity", {}), slice_name, metric)
    best = reference.get("best_baseline", {}).get(slice_name or "", {})
    best_value = float("nan") if best.get(metric) is None else float(best[metric])
    promoted = _value(incumbent["metrics"], slice_name, metric) if incumbent else None
    if promoted is not None and math.isnan(promoted):
        promoted = None  # the promoted model has no value on this slice: no regression to measure
    return {
        "model_version": candidate["model_version"],
        "losses_finite": bool(candidate["metrics"].get("training", {}).get("losses_finite", False)),
        "gate_slice": slice_name or "none", "gate_users": basis["users"], "gate_basis": basis["reason"],
        metric: ours,
        f"popularity_{metric}": popularity,
        "best_baseline": best.get("model") or "popularity",
        f"best_baseline_{metric}": popularity if math.isnan(best_value) else best_value,
        "promoted_version": incumbent["model_version"] if incumbent else None,
        f"promoted_{metric}": promoted,
        # Relative change against the promoted model; 0 when there is none to compare with.
        "change_vs_promoted": (ours / promoted - 1.0) if promoted else 0.0,
        "margin_over_popularity": ours - popularity,
        # What is served against the best baseline on validation: the plan may serve that baseline (margin 0),
        # never something that validated worse.
        "margin_over_best_baseline": ours - (popularity if math.isnan(best_value) else best_value),
    }


def promotion_gate(con: duckdb.DuckDBPyConnection, model_version: str, tolerance: float) -> tuple[Report, dict]:
    """(report, facts) on validation figures: finite losses; what the plan serves is at least as good on HR@10
    of the gate slice (cold users, or all users when fewer than MIN_GATE_USERS are cold; facts['gate_slice']
    and ['gate_basis'] say which and why) as the best baseline; within `tolerance` (relative) of the promoted
    plan on the same slice. The candidate is compared with the promoted row, never with itself."""
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
        gxe.ExpectColumnValuesToNotBeNull(column="margin_over_best_baseline"),
        gxe.ExpectColumnValuesToBeBetween(column="margin_over_best_baseline", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="change_vs_promoted", min_value=-tolerance),
    ], VERSION, batch="promotion_gate")
    return report, facts


def gate_reason(report: Report, facts: dict[str, Any], tolerance: float) -> str:
    """One sentence a person reads in models.registry.reason (and the check's verdict)."""
    slice_name, metric = facts["gate_slice"], GATE_METRIC[1]
    ours = facts[metric]
    if slice_name == "none":
        return facts["gate_basis"]
    parts = []
    if not facts["losses_finite"]:
        parts.append("training losses were not finite")
    margin = facts["margin_over_best_baseline"]
    if margin is None or math.isnan(margin) or margin < 0:
        parts.append(f"served {slice_name} {metric} {_fmt(ours)} is below the best baseline "
                     f"{facts['best_baseline']}'s {_fmt(facts[f'best_baseline_{metric}'])}")
    if facts["change_vs_promoted"] < -tolerance:
        parts.append(f"{slice_name} {metric} {_fmt(ours)} is {-facts['change_vs_promoted']:.1%} below promoted "
                     f"{facts['promoted_version']} ({_fmt(facts[f'promoted_{metric}'])}; "
                     f"tolerance {tolerance:.0%})")
    verdict = "; ".join(parts) if parts else ("passed" if report.success else report.markdown())
    if slice_name != GATE_METRIC[0]:
        verdict += f" ({facts['gate_basis']})"
    return verdict


def _value(metrics: dict[str, Any], slice_name: str | None, metric: str) -> float:
    value = metrics.get(slice_name, {}).get(metric) if slice_name else None
    return float("nan") if value is None else float(value)


def _slice_users(values: dict[str, Any], metric: str) -> int | None:
    """Users of a registered slice: its 'users' entry; None (unknown) for rows registered before it existed."""
    if "users" in values:
        return int(values["users"])
    return None if metric in values else 0


def _count(users: int | None) -> str:
    return "an unrecorded number of" if users is None else str(users)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


SUITES = {
    "models.hgnn_item_embeddings": hgnn_item_embeddings_suite,
    "eval.offline_metrics": offline_metrics_suite,
    "models.registry": registry_suite,
}
