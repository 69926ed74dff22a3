"""The summary `crossfade run` prints at the end: row counts and what a person checks first, from the published state."""
from __future__ import annotations

import duckdb
import polars as pl

from warehouse.settings import Settings
from warehouse.store import NothingPublishedError, Store, table_exists

SCHEMAS = ("raw", "features", "enrich", "models", "eval", "serving")
# (table the section needs, title, query): printed in this order when the table has rows to show.
SECTIONS = (
    ("raw.quarantined_files", "quarantined landing files (replace them and run again to ingest them)",
     "select arrival_date, source_file, reason from raw.quarantined_files order by 1, 2 limit 20"),
    ("raw.rejected_events", "rejected events by reason",
     "select reason, count(*) as events from raw.rejected_events group by 1 order by 2 desc"),
    ("enrich.llm_quality", "LLM output quality per kind (used downstream only when every metric of its kind "
     "passed; else the floor's topics / the template profile)",
     "select kind, metric, round(value, 3) as value, count_answers as answers, floor, passed, "
     "case when is_used then 'llm' else 'floor' end as used, reason from enrich.llm_quality order by kind, metric"),
    ("enrich.user_profiles", "what downstream reads per user: the LLM narrative only where its kind passed and the "
     "narrative itself is usable, else the template",
     "select profile_source, profile_reason, count(*) as users from enrich.user_profiles "
     "where profile_source is not null group by all order by users desc"),
    ("enrich.item_topics", "what downstream reads per item: the LLM's topics only where its kind passed",
     "select topics_source, topics_reason, count(*) as items from enrich.item_topics group by all order by items desc"),
    ("eval.offline_metrics", "offline HR@10 by model and slice, validation (choices) and holdout (scored once); "
     "'served' is the serving plan (empty slices: null)",
     "pivot (select split, model, slice, value from eval.offline_metrics where metric = 'hr@10') "
     "on slice using first(value) order by split desc, model"),
    ("models.registry", "models, newest first (serving plan per slice; gate: the slice the promotion gate compared, "
     "and why; slices without users)",
     "select model_version, status, coalesce(reason, '') as reason, metrics->'plan'->'cold'->>'model' as cold_model, "
     "metrics->'plan'->'warm'->>'model' as warm_model, metrics->'gate'->>'slice' as gate_slice, "
     "metrics->'gate'->>'reason' as gate_basis, metrics->>'empty_slices' as empty_slices "
     "from models.registry order by created_at desc limit 3"),
    ("serving.candidates", "published candidates (newest as-of date) by the model that made them",
     "select as_of, coalesce(model, 'unrecorded') as model, count(distinct user_id) as users, count(*) as rows, "
     "count(*) filter (where is_fallback) as fallback_rows from serving.candidates "
     "where as_of = (select max(as_of) from serving.candidates) group by all order by users desc"),
    ("eval.judge_scores", "LLM judge (pairwise wins count only when both orders agree)",
     "select kind, coalesce(final_winner, verdict, status) as outcome, count(*) as judgements "
     "from eval.judge_scores group by all order by all"),
    ("eval.judge_validation", "judge validity: panel ROC-AUC of the LLM's P(aligned) and of sBERT-Sim, and agreement "
     "with holdout hits per model pair, 95% intervals ('judge uninformative' when the interval holds 0.5)",
     "select metric, coalesce(model_a || ' vs ' || model_b, 'panel') as compared, judge, scored_by, "
     "round(value, 3) as value, '[' || round(ci_low, 3) || ', ' || round(ci_high, 3) || ']' as interval_95, "
     "pairs, users, case when value is null then 'not measured' when informative then 'informative' "
     "else 'judge uninformative' end as validity, "
     "case when count(value) over (partition by metric, model_a, model_b) > 1 "
     "and value = max(value) over (partition by metric, model_a, model_b) then 'validates better' else '' end as better "
     "from eval.judge_validation order by metric desc, compared, judge"),
)


def print_summary(settings: Settings) -> None:
    """Rows per table, then each section whose table exists and has something to show."""
    store = Store(settings.database)
    try:
        with store.read() as con:
            print("\nrows per table (published state):")
            for name, rows in row_counts(con, store.published_tables()):
                print(f"  {name:34s} {rows:>12,}" if rows is not None else f"  {name:34s} {'not published':>12}")
            for table, title, query in SECTIONS:
                try:
                    frame = con.execute(query).pl() if table_exists(con, table) else pl.DataFrame()
                except duckdb.Error as error:  # a table written by an older version, before a column existed
                    print(f"\n{title}: not shown ({table} predates this query: {error})")
                    continue
                if frame.height:
                    print(f"\n{title}:")
                    # wide enough that no cell wraps: a reason stays on one line, whole, for grep
                    with pl.Config(tbl_rows=25, tbl_cols=-1, fmt_str_lengths=300, tbl_width_chars=10_000,
                                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
                        print(frame)
    except NothingPublishedError:
        print("nothing published yet")
    pending = store.pending_stages()
    if pending:
        print("\nnot published (the stage's gate failed or has not run; readers see its last published state):")
        for stage, tables in sorted(pending.items()):
            print(f"  {stage:34s} {', '.join(sorted(tables))}")


def row_counts(con: duckdb.DuckDBPyConnection, published: set[str]) -> list[tuple[str, int | None]]:
    """Rows per table readers see; None for a table that exists but was never published."""
    names = [row[0] for row in con.execute(
        "select distinct schema_name || '.' || name from (select schema_name, table_name as name from duckdb_tables() "
        "union all select schema_name, view_name from duckdb_views() where not internal) "
        "where schema_name in (select unnest($schemas)) order by 1", {"schemas": list(SCHEMAS)}).fetchall()]
    return [(name, con.execute(f"select count(*) from {name}").fetchone()[0] if name in published else None)
            for name in names]
