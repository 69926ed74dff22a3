"""enrich.llm_cache: every LLM answer, keyed by (model, prompt_version, input_hash), so re-runs cost nothing."""
from __future__ import annotations

from typing import Any, Sequence

import duckdb

TABLE = "enrich.llm_cache"
COLUMNS = (
    "model", "prompt_version", "input_hash", "status", "output_json", "raw_text", "error",
    "prompt_tokens", "completion_tokens", "seconds",
)
STATUSES = frozenset({"ok", "failed"})

CREATE = """
create schema if not exists enrich;
create table if not exists enrich.llm_cache (
    model varchar not null,
    prompt_version varchar not null,
    input_hash varchar not null,
    status varchar not null,           -- ok | failed (output did not validate after every attempt)
    output_json varchar,               -- validated answer; null when failed
    raw_text varchar,                  -- the model's last answer as written, for a person to inspect
    error varchar,
    prompt_tokens bigint not null,
    completion_tokens bigint not null,
    seconds double not null,
    created_at timestamp not null,     -- UTC
    primary key (model, prompt_version, input_hash)
);
"""

# Lists bound as parameters and unnested side by side: one statement, no values in the SQL text.
GET = """
with wanted as (
    select unnest($model) as model, unnest($prompt_version) as prompt_version, unnest($input_hash) as input_hash
)
select c.model, c.prompt_version, c.input_hash, c.status, c.output_json, c.raw_text, c.error,
    c.prompt_tokens, c.completion_tokens, c.seconds
from enrich.llm_cache as c
inner join wanted as w
    on c.model = w.model and c.prompt_version = w.prompt_version and c.input_hash = w.input_hash
"""

PUT = """
insert or replace into enrich.llm_cache
select
    unnest($model), unnest($prompt_version), unnest($input_hash), unnest($status), unnest($output_json),
    unnest($raw_text), unnest($error), unnest($prompt_tokens), unnest($completion_tokens), unnest($seconds),
    timezone('UTC', now())
"""


class LLMCache:
    """The DuckDB side of the enrichment cache: `get_many(keys)` and `put_many(rows)` on plain dicts."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute(CREATE)

    def get_many(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        if not keys:
            return {}
        model, prompt_version, input_hash = (list(part) for part in zip(*keys))
        rows = self.con.execute(
            GET, {"model": model, "prompt_version": prompt_version, "input_hash": input_hash}
        ).fetchall()
        return {(row[0], row[1], row[2]): dict(zip(COLUMNS, row)) for row in rows}

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        missing = [column for column in COLUMNS if column not in rows[0]]
        if missing:
            raise ValueError(f"cache rows need keys {list(COLUMNS)} (missing {missing})")
        bad = sorted({str(row["status"]) for row in rows} - STATUSES)
        if bad:
            raise ValueError(f"status must be 'ok' or 'failed' (got {bad})")
        values = {column: [row[column] for row in rows] for column in COLUMNS}
        values["prompt_tokens"] = [int(value) for value in values["prompt_tokens"]]
        values["completion_tokens"] = [int(value) for value in values["completion_tokens"]]
        values["seconds"] = [float(value) for value in values["seconds"]]
        self.con.execute(PUT, values)

