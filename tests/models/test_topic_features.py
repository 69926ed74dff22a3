"""Item topics reach the models: warehouse.readers puts enrich.item_topics' `topics` into FeatureFrames."""
import duckdb
import polars as pl

from models.recommender import FeatureFrames, topic_table
from warehouse import readers


def feature_warehouse() -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with one-row feature tables and raw.items (the columns do not matter here)."""
    con = duckdb.connect()
    for schema in ("features", "raw", "enrich"):
        con.execute(f"create schema {schema}")
    for table in readers.FEATURE_FRAMES.values():
        con.execute(f"create table {table} as select 'x' as item_id")
    return con


def test_frames_have_no_topics_before_enrichment_has_run() -> None:
    frames = FeatureFrames(**readers.feature_tables(feature_warehouse()))
    assert frames.item_topics is None


def test_frames_read_the_topics_column_downstream_uses() -> None:
    con = feature_warehouse()
    # floor_topics differ from topics: the frame must carry `topics` (the LLM's only where it passed its floor)
    con.execute("""create table enrich.item_topics as
                   select * from (values ('a1', ['jazz'], ['comedy']), ('a2', [], ['news and politics']))
                   as t(item_id, topics, floor_topics)""")
    frames = FeatureFrames(**readers.feature_tables(con))
    assert frames.item_topics.columns == ["item_id", "topics"]
    assert frames.item_topics.sort("item_id")["topics"].to_list() == [["jazz"], []]
    ids, table = topic_table(frames.item_topics, ["comedy", "jazz"])
    assert ids.to_list() == ["a1"] and table.tolist() == [[0.0, 1.0]]  # a2 has no topic: no row
    assert topic_table(None, ["jazz"])[1].shape == (0, 1)
    assert topic_table(pl.DataFrame({"item_id": ["a1"], "topics": [["jazz"]]}), [])[1].shape == (0, 0)


def test_frames_arrive_in_batches_whole_and_without_the_unread_interaction_columns(monkeypatch) -> None:
    con = feature_warehouse()
    con.execute("drop table features.interactions")
    con.execute("""create table features.interactions as
                   select 'u' || (i % 7) as user_id, 'i' || i as item_id, i as count_events, i * 1.5 as ms_played_total,
                          0.5 as completion_rate, now() as first_seen_at, now() as last_seen_at
                   from range(25) as t(i)""")
    monkeypatch.setattr(readers, "BATCH_ROWS", 4)  # 7 batches
    interactions = readers.feature_tables(con)["interactions"]
    assert interactions.columns == ["user_id", "item_id", "count_events"]
    assert interactions.sort("count_events")["count_events"].to_list() == list(range(25))
    con.execute("delete from features.interactions")
    assert readers.feature_tables(con)["interactions"].schema == interactions.schema  # empty: same columns
