"""models.registry: every trained model version, its metrics and status; at most one is promoted."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb

from warehouse.store import run_sql, table_exists

TABLE = "models.registry"
STATUSES = ("candidate", "promoted", "rejected", "retired")
REQUIRED = ("model_version", "model_name", "as_of", "config", "metrics", "checkpoint_dir")
COLUMNS = ("model_version", "model_name", "created_at", "as_of", "train_start", "train_end", "config", "metrics",
           "checkpoint_dir", "status", "reason", "promoted_at")
JSON_COLUMNS = ("config", "metrics")


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create models.registry when missing (needs a write connection)."""
    run_sql(con, "models/registry")


def exists(con: duckdb.DuckDBPyConnection) -> bool:
    return table_exists(con, "models.registry")


def register(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert one version as 'candidate' (unless row['status'] says otherwise); config and metrics are dicts."""
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise ValueError(f"registry row lacks {missing} (got keys {sorted(row)})")
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"registry row has unknown columns {unknown}; allowed: {list(COLUMNS)}")
    status = row.get("status", "candidate")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {list(STATUSES)} (got {status!r})")
    ensure(con)
    if get(con, row["model_version"]) is not None:
        raise ValueError(f"model_version {row['model_version']!r} is already registered; versions are never reused")
    values = {column: row.get(column) for column in COLUMNS}
    values |= {"status": status, "created_at": row.get("created_at") or _now()}
    values |= {column: json.dumps(row[column], sort_keys=True, default=str) for column in JSON_COLUMNS}
    placeholders = ", ".join(f"${column}" for column in COLUMNS)
    con.execute(f"insert into {TABLE} ({', '.join(COLUMNS)}) values ({placeholders})", values)


def get(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any] | None:
    rows = _rows(con, "model_version = $version", {"version": model_version})
    return rows[0] if rows else None


def promoted(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The promoted row as a dict (config and metrics parsed), or None when nothing was promoted yet."""
    rows = _rows(con, "status = 'promoted'", {})
    if len(rows) > 1:
        raise ValueError(f"{len(rows)} promoted rows ({[r['model_version'] for r in rows]}); exactly one may be "
                         "promoted: retire the others with an update on models.registry")
    return rows[0] if rows else None


def latest(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The newest registered row, whatever its status (the version the last training run produced)."""
    rows = _rows(con, "true", {}, limit=1)
    return rows[0] if rows else None


def latest_tuned(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The newest row whose metrics record `tuned_at` (when its settings were validated), whatever its status."""
    rows = _rows(con, "json_exists(metrics, '$.tuned_at')", {}, limit=1)
    return rows[0] if rows else None


def candidates(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Rows still waiting for a verdict, newest first."""
    return _rows(con, "status = 'candidate'", {})


def promote(con: duckdb.DuckDBPyConnection, model_version: str) -> None:
    """Make a candidate the promoted model; the previously promoted one becomes 'retired', in one transaction."""
    row = get(con, model_version)
    if row is None or row["status"] != "candidate":
        raise ValueError(f"only a registered candidate can be promoted (got {model_version!r} with status "
                         f"{row['status'] if row else 'unregistered'!r})")
    con.execute("begin transaction")
    try:
        con.execute(f"update {TABLE} set status = 'retired', reason = $reason where status = 'promoted'",
                    {"reason": f"replaced by {model_version}"})
        con.execute(f"update {TABLE} set status = 'promoted', reason = null, promoted_at = $at "
                    "where model_version = $version", {"at": _now(), "version": model_version})
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def reject(con: duckdb.DuckDBPyConnection, model_version: str, reason: str) -> None:
    """Mark a candidate 'rejected' with the reason a person reads in the registry."""
    row = get(con, model_version)
    if row is None or row["status"] != "candidate":
        raise ValueError(f"only a registered candidate can be rejected (got {model_version!r} with status "
                         f"{row['status'] if row else 'unregistered'!r})")
    con.execute(f"update {TABLE} set status = 'rejected', reason = $reason where model_version = $version",
                {"reason": reason, "version": model_version})


def _rows(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any], limit: int | None = None,
          ) -> list[dict[str, Any]]:
    """Rows matching `where`, newest first, their JSON parsed: only the first `limit` (default all) are read."""
    if not exists(con):
        return []
    cursor = con.execute(f"select {', '.join(COLUMNS)} from {TABLE} where {where} order by created_at desc, "
                         f"model_version desc{'' if limit is None else f' limit {int(limit)}'}", params)
    rows = [dict(zip(COLUMNS, values)) for values in cursor.fetchall()]
    for row in rows:
        for column in JSON_COLUMNS:
            row[column] = json.loads(row[column])
    return rows


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
