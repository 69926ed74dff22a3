"""Run Great Expectations suites on dataframe batches and report each failed expectation with its counts."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import great_expectations as gx
import pandas as pd
import polars as pl

logging.getLogger("great_expectations").setLevel(logging.ERROR)


@dataclass
class Report:
    """The verdict of one table's suite, with the numbers behind every failed expectation."""

    table: str
    suite_version: str
    rows: int = 0
    checked: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed

    def merge(self, other: Report) -> None:
        self.checked += other.checked
        self.failed.extend(other.failed)

    def markdown(self) -> str:
        if not self.failed:
            return f"all {self.checked} expectations passed on {self.rows} rows"
        lines = ["| expectation | column | unexpected | observed |", "| --- | --- | --- | --- |"]
        for failure in self.failed:
            lines.append(
                f"| {failure['expectation']} | {failure.get('column') or ''} | "
                f"{failure.get('unexpected_count', '')} | {failure.get('observed_value', '')} |"
            )
        return "\n".join(lines)


@lru_cache(maxsize=1)
def _context() -> Any:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    return context


def validate_frame(
    table: str, frame: pd.DataFrame | pl.DataFrame, expectations: list[Any], suite_version: str, batch: str = "rows"
) -> Report:
    """Validate one dataframe batch against a list of GE expectations."""
    if isinstance(frame, pl.DataFrame):
        frame = frame.to_pandas()
    context = _context()
    name = f"{table}:{batch}"
    source = context.data_sources.add_or_update_pandas(f"crossfade-{name}")
    asset = source.add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=f"{table}@{suite_version}:{batch}")
    for expectation in expectations:
        suite.add_expectation(expectation)
    result = definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    report = Report(table=table, suite_version=suite_version, rows=len(frame), checked=len(result.results))
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        details = outcome.result or {}
        kwargs = {key: value for key, value in config.kwargs.items() if key not in ("batch_id", "column")}
        report.failed.append({
            "batch": batch,
            "expectation": config.type,
            "column": config.kwargs.get("column") or config.kwargs.get("column_list"),
            "unexpected_count": details.get("unexpected_count"),
            "element_count": details.get("element_count"),
            "observed_value": _short(details.get("observed_value")),
            "examples": [_short(value) for value in (details.get("partial_unexpected_list") or [])[:5]],
            "expected": _short(kwargs),
            "error": _short(outcome.exception_info.get("exception_message")) if outcome.exception_info.get("raised_exception") else None,
        })
    return report


def _short(value: Any, limit: int = 200) -> Any:
    if value is None or isinstance(value, (int, float, bool)):
        return value
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
