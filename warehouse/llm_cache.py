"""enrich.llm_cache: every LLM answer, keyed by (model, prompt_version, input_hash), so re-runs cost nothing.

An 'ok' answer is final. A 'failed' one records how many runs asked (attempt_count) and when the last did
(created_at), so a later run can ask again until its bound (models.enrichment.MAX_ATTEMPTS).
"""
from __future__ import annotations

from typing import Any, Sequence

import duckdb

TABLE = "enrich.llm_cache"
COLUMNS = (
    "model", "prompt_version", "input_hash", "status", "output_json", "raw_text", "error",
    "prompt_tokens", "completion_tokens", "seconds", "attempt_count",
)
READ_COLUMNS = COLUMNS + ("attempted_at",)  # what GET returns, in order
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
    created_at timestamp not null      -- UTC, when this answer was last asked for
    -- one row per (model, prompt_version, input_hash): PUT replaces
);
-- runs that asked for this input, the last included; a warehouse from before retries upgrades here
alter table enrich.llm_cache add column if not exists attempt_count integer default 1;
"""

# Lists bound as parameters and unnested side by side: one statement, no values in the SQL text.
_GET = """
with wanted as (
    select unnest($model) as model, unnest($prompt_version) as prompt_version, unnest($input_hash) as input_hash
)
select c.model, c.prompt_version, c.input_hash, c.status, c.output_json, c.raw_text, c.error,
    c.prompt_tokens, c.completion_tokens, c.seconds, {attempt_count} as attempt_count, c.created_at as attempted_at
from enrich.llm_cache as c
inner join wanted as w
    on c.model = w.model and c.prompt_version = w.prompt_version and c.input_hash = w.input_hash
"""


def get_query(stored_columns: set[str]) -> str:
    """GET for a cache with these columns: a read-only snapshot from before retries has no attempt_count
    (every row there was asked once)."""
    return _GET.format(attempt_count="c.attempt_count" if "attempt_count" in stored_columns else "1")


# PUT replaces: the answers' keys are deleted, then the answers inserted (a crash between loses cached
# answers, which are asked again, never a duplicate key)
PUT = ("""
delete from enrich.llm_cache as c
using (select unnest($model) as model, unnest($prompt_version) as prompt_version, unnest($input_hash) as input_hash) as w
where c.model = w.model and c.prompt_version = w.prompt_version and c.input_hash = w.input_hash
""", """
insert into enrich.llm_cache
select
    unnest($model), unnest($prompt_version), unnest($input_hash), unnest($status), unnest($output_json),
    unnest($raw_text), unnest($error), unnest($prompt_tokens), unnest($completion_tokens), unnest($seconds),
    timezone('UTC', now()), unnest($attempt_count)
""")


class LLMCache:
    """The DuckDB side of the enrichment cache: `put_many(rows)` stores answers as plain dicts.

    Runs read answers with `enrichment_tables.cached_answers`, which also works on read-only snapshots.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute(CREATE)

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
        values["attempt_count"] = [int(value) for value in values["attempt_count"]]
        delete, insert = PUT
        self.con.execute(delete, {key: values[key] for key in ("model", "prompt_version", "input_hash")})
        self.con.execute(insert, values)

