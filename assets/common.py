"""What every stage attaches to the UI: row counts, Markdown previews, check verdicts with their numbers."""
from __future__ import annotations

import base64
import time
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from assets.resources import Warehouse
from quality import Report

# The Dagster concurrency pool of every step that writes the warehouse: every asset and the promotion gate.
# The instance limits it to one step at a time across all runs (pipelines/runner.py, deploy/k8s/dagster.yaml),
# since the warehouse takes one writer at a time and a network volume may not honour the store's file lock.
WAREHOUSE_POOL = "crossfade_warehouse"


def preview(con: duckdb.DuckDBPyConnection, table: str, limit: int = 5) -> dg.MetadataValue:
    frame = con.execute(f"select * from {table} limit {int(limit)}").pl()
    return dg.MetadataValue.md(markdown_table(frame))


def markdown_table(frame: pl.DataFrame, max_chars: int = 60) -> str:
    if frame.is_empty():
        return "_no rows_"
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = []
    for row in frame.iter_rows():
        cells = [str(value).replace("|", "\\|").replace("\n", " ") for value in row]
        rows.append("| " + " | ".join(cell if len(cell) <= max_chars else cell[: max_chars - 1] + "…" for cell in cells) + " |")
    return "\n".join([header, rule, *rows])


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG inline in a Markdown metadata value, as the UI shows it."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def gate(report: Report, warehouse: Warehouse, stage: str, extra: dict[str, Any] | None = None) -> dg.AssetCheckResult:
    """A blocking check that guards readers: when it passes, what `stage` wrote is published to them; when it
    fails, readers stay on the last published state, and the stage's next write starts again from it."""
    if report.success:
        started = time.perf_counter()
        tables = warehouse.publish(stage)
        facts = {"published": True, "published_tables": dg.MetadataValue.json(tables),
                 "publish_seconds": round(time.perf_counter() - started, 4)}
    else:
        facts = {"published": False, "unpublished_tables": dg.MetadataValue.json(warehouse.store().reject(stage))}
    return check_result(report, {**(extra or {}), **facts},
                        failure_note="; not published: readers keep the last published state")


def check_result(report: Report, extra: dict[str, Any] | None = None, failure_note: str = "") -> dg.AssetCheckResult:
    """A blocking check's verdict with each failed expectation and its counts."""
    metadata: dict[str, Any] = {
        "suite": report.suite_version,
        "rows_checked": report.rows,
        "expectations": report.checked,
        "failed_expectations": len(report.failed),
        "details": dg.MetadataValue.md(report.markdown()),
    }
    if report.failed:
        metadata["failures"] = dg.MetadataValue.json(report.failed)
    metadata.update(extra or {})
    return dg.AssetCheckResult(
        passed=report.success, metadata=metadata,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if report.success else (
            f"{report.table}: {len(report.failed)} expectation(s) failed; see details{failure_note}"),
    )
