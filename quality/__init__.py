"""Expectation suites per table; `check(con, table, limits)` runs one and returns its Report.

Each `quality/*_suites.py` module maps table names to suite functions in its `SUITES` dict.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import duckdb

from quality.thresholds import Thresholds
from quality.validate import Report

Suite = Callable[[duckdb.DuckDBPyConnection, Thresholds], Report]


def _collect() -> dict[str, Suite]:
    suites: dict[str, Suite] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.endswith("_suites"):
            suites.update(importlib.import_module(f"{__name__}.{module.name}").SUITES)
    return suites


SUITES = _collect()


def check(con: duckdb.DuckDBPyConnection, table: str, limits: Thresholds) -> Report:
    """Run the suite of `table` (schema-qualified) on the current warehouse contents."""
    if table not in SUITES:
        raise KeyError(f"no expectation suite for {table!r}; known: {sorted(SUITES)}")
    return SUITES[table](con, limits)


__all__ = ["Report", "SUITES", "Thresholds", "check"]
