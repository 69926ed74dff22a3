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
