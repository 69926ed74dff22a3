"""Suites that scale: each rule is counted in SQL over the checked rows, and Great Expectations judges the counts.

A table of 43M rows never leaves DuckDB: one aggregate pass computes, per rule, how many rows break it (or a
value such as a row count or a mean), and Great Expectations validates that one-row frame against each
rule's allowed range. A failure is reported under the expectation the rule stands for, with the number of
unexpected rows and up to five offending values read back from the table.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import great_expectations.expectations as gxe
import polars as pl

from quality.validate import Report, validate_frame

EXAMPLES = 5


@dataclass(frozen=True)
class Rule:
    """One expectation on the checked rows: `fact` is a SQL aggregate over `checked`; it must lie in [low, high].

    `unexpected`, when set, is the predicate of a row that breaks the rule (the fact then counts such rows)
    and `shown` the value listed for it in the report.
    """

    expectation: str
    column: str | list[str] | None
    fact: str
    low: float | None = None
    high: float | None = 0
    unexpected: str | None = None
    shown: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counts_rows(self) -> bool:
        return self.unexpected is not None


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _broken(expectation: str, column: str, predicate: str, params: Mapping[str, Any] | None = None) -> Rule:
    return Rule(expectation, column, f"count(*) filter (where {predicate})", unexpected=predicate,
                shown=_quoted(column), params=params or {})


def not_null(column: str, mostly: float | None = None) -> Rule:
    """No nulls; with `mostly`, at least that share of rows not null."""
    predicate = f"{_quoted(column)} is null"
    if mostly is None:
        return _broken("expect_column_values_to_not_be_null", column, predicate)
    return Rule("expect_column_values_to_not_be_null", column,
                f"coalesce(count(*) filter (where {predicate}) / count(*), 0)", high=round(1 - mostly, 12))


def in_set(column: str, values: Sequence[Any]) -> Rule:
    """Every non-null value is one of `values`."""
    name = f"set_{column}"
    return _broken("expect_column_values_to_be_in_set", column,
                   f"{_quoted(column)} is not null and not list_contains(${name}, {_quoted(column)})", {name: list(values)})


def is_true(column: str) -> Rule:
    """A boolean the relation computes (a leakage or ordering test) holds on every row."""
    return _broken("expect_column_values_to_be_in_set", column, f"{_quoted(column)} is distinct from true")


def between(column: str, low: float | None = None, high: float | None = None) -> Rule:
    """Every non-null value lies in [low, high]."""
    bounds, params = [], {}
    if low is not None:
        bounds.append(f"{_quoted(column)} < $low_{column}")
        params[f"low_{column}"] = low
    if high is not None:
        bounds.append(f"{_quoted(column)} > $high_{column}")
        params[f"high_{column}"] = high
    return _broken("expect_column_values_to_be_between", column, " or ".join(bounds), params)


def unique(*columns: str) -> Rule:
    """No key (one column or a compound) appears twice; counts every row of a repeated key, as GE does."""
    key = ", ".join(_quoted(column) for column in columns)
    repeated = f"select {key}, count(*) as copies from checked group by all having count(*) > 1"
    name = "expect_column_values_to_be_unique" if len(columns) == 1 else "expect_compound_columns_to_be_unique"
    return Rule(name, columns[0] if len(columns) == 1 else list(columns),
                f"(select coalesce(sum(copies), 0) from ({repeated}))",
                unexpected=f"({key}) in (select ({key}) from ({repeated}))",
                shown=key if len(columns) == 1 else f"row({key})")


def row_count(low: int | None = None, high: int | None = None) -> Rule:
    name = "expect_table_row_count_to_equal" if low == high else "expect_table_row_count_to_be_between"
    return Rule(name, None, "count(*)", low=low, high=high)


def mean_between(column: str, low: float | None = None, high: float | None = None) -> Rule:
    """The mean of a column (booleans count as 0/1) lies in [low, high]; an empty table has mean 0."""
    return Rule("expect_column_mean_to_be_between", column, f"coalesce(avg({_quoted(column)}::double), 0)",
                low=low, high=high)


def validate_facts(
    con: duckdb.DuckDBPyConnection, table: str, checked: str, rules: Sequence[Rule], suite_version: str,
    params: Mapping[str, Any] | None = None, batch: str = "rows",
) -> Report:
    """Count every rule over the rows of the `checked` query in one pass, then validate the counts with GE."""
    bound = dict(params or {})
    for rule in rules:
        for name, value in rule.params.items():
            if bound.setdefault(name, value) != value:
                raise ValueError(f"{table}: two rules bind ${name} to different values ({bound[name]!r}, {value!r})")
    names = [f"fact_{index}" for index in range(len(rules))]
    select = ", ".join(f"{rule.fact} as {name}" for rule, name in zip(rules, names))
    query = f"with checked as ({checked}) select count(*) as count_rows, {select} from checked"
    values = con.execute(query, _used(query, bound)).fetchall()[0]
    facts = pl.DataFrame([values[1:]], schema=names, orient="row")
    report = validate_frame(table, facts, [
        gxe.ExpectColumnValuesToBeBetween(column=name, min_value=rule.low, max_value=rule.high)
        for rule, name in zip(rules, names)
    ], suite_version, batch=batch)
    report.rows = int(values[0])
    by_name = dict(zip(names, rules))
    for failure in report.failed:
        rule = by_name[failure["column"]]
        value = facts[failure["column"]][0]
        failure.update(expectation=rule.expectation, column=rule.column, element_count=report.rows,
                       expected={"min_value": rule.low, "max_value": rule.high})
        if rule.counts_rows:
            failure.update(unexpected_count=int(value), observed_value=None,
                           examples=_examples(con, checked, rule, bound))
        else:
            failure.update(unexpected_count=None, observed_value=value, examples=[])
    return report


def _examples(con: duckdb.DuckDBPyConnection, checked: str, rule: Rule, params: Mapping[str, Any]) -> list[str]:
    query = (f"with checked as ({checked}) select distinct {rule.shown} from checked "
             f"where {rule.unexpected} limit {EXAMPLES}")
    return [str(row[0]) for row in con.execute(query, _used(query, params)).fetchall()]


def _used(query: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in params.items() if re.search(rf"\${re.escape(name)}\b", query)}
