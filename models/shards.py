"""User shards for candidate fan-out: a stable hash puts every user in exactly one of N shards."""
from __future__ import annotations

import duckdb
import polars as pl


def assign_shards(user_ids: pl.Series, shards: int) -> pl.Series:
    """The shard (0 .. shards - 1) of every user id, in their order, computed by DuckDB in bulk."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1 (got {shards})")
    con = duckdb.connect()
    try:
        con.register("users", pl.DataFrame({"user_id": user_ids.cast(pl.String)}))
        # The first 16 hex digits of md5(user_id) as an unsigned 64-bit integer, modulo the shard count. md5
        # is fixed forever, unlike DuckDB's hash() or polars' hash, which may change between versions and
        # would move users between shards.
        shard = con.execute("select ('0x' || left(md5(user_id), 16))::ubigint % $shards as shard from users",
                            {"shards": shards}).pl()["shard"]
    finally:
        con.close()
    return shard.cast(pl.Int32).alias("shard")


def in_shard(user_ids: pl.Series, index: int, shards: int) -> pl.Series:
    """The user ids of shard `index` of `shards`, in their order."""
    if not 0 <= index < shards:
        raise ValueError(f"need 0 <= shard index < shards (got index {index}, shards {shards})")
    return user_ids.filter(assign_shards(user_ids, shards) == index)
