"""User shards for candidate fan-out: a stable hash puts every user in exactly one of N shards."""
from __future__ import annotations

import hashlib
import re

import dagster as dg
import duckdb
import polars as pl

from assets.partitions import candidates_partitions

DEFAULT_SHARDS = 16  # 1M users -> about 62k per shard: one pod scores its users against the catalogue in minutes
SHARD_KEY_RE = re.compile(r"^shard-(\d{2,4})-of-(\d{2,4})$")

# The same number in DuckDB and in Python: the first 16 hex digits of md5(user_id) as an unsigned
# 64-bit integer, modulo the shard count. md5 is fixed forever, unlike DuckDB's hash() or polars' hash,
# which may change between versions and would move users between shards.
SHARD_EXPRESSION = "('0x' || left(md5(user_id), 16))::ubigint % $shards"


def shard_of(user_id: str, shards: int) -> int:
    """The shard (0 .. shards - 1) of one user id."""
    _check_shards(shards)
    return int(hashlib.md5(user_id.encode("utf-8")).hexdigest()[:16], 16) % shards


def assign_shards(user_ids: pl.Series, shards: int) -> pl.Series:
    """The shard of every user id, computed by DuckDB in bulk (same numbers as `shard_of`)."""
    _check_shards(shards)
    frame = pl.DataFrame({"user_id": user_ids.cast(pl.String)})
    con = duckdb.connect()
    try:
        con.register("users", frame)
        shard = con.execute(f"select {SHARD_EXPRESSION} as shard from users", {"shards": shards}).pl()["shard"]
    finally:
        con.close()
    return shard.cast(pl.Int32).alias("shard")


def users_in_shard(con: duckdb.DuckDBPyConnection, index: int, shards: int, table: str = "features.user_stats") -> list[str]:
    """The user ids of one shard, read from `table` (a schema-qualified name with a user_id column)."""
    _check_shards(shards)
    if not 0 <= index < shards or not re.fullmatch(r"[a-z_]+\.[a-z_]+", table):
        raise ValueError(f"need 0 <= index < shards and a schema.table name (got {index}, {shards}, {table!r})")
    rows = con.execute(
        f"select user_id from {table} where {SHARD_EXPRESSION} = $index order by user_id",
        {"shards": shards, "index": index},
    ).fetchall()
    return [row[0] for row in rows]


def shard_key(index: int, shards: int) -> str:
    """The partition key of shard `index` of `shards`, e.g. 'shard-03-of-16'."""
    _check_shards(shards)
    if not 0 <= index < shards:
        raise ValueError(f"shard index must be in 0..{shards - 1} (got {index})")
    return f"shard-{index:02d}-of-{shards:02d}"


def parse_shard_key(key: str) -> tuple[int, int]:
    """(index, shards) from a key made by `shard_key`; anything else is refused."""
    match = SHARD_KEY_RE.fullmatch(key)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"shard key must look like 'shard-03-of-16' (got {key!r})")
    return int(match.group(1)), int(match.group(2))


def shard_partitions(shards: int = DEFAULT_SHARDS) -> dg.StaticPartitionsDefinition:
    """One static partition per shard."""
    return dg.StaticPartitionsDefinition([shard_key(index, shards) for index in range(shards)])


def _check_shards(shards: int) -> None:
    if not 1 <= shards <= 9999:
        raise ValueError(f"shards must be between 1 and 9999 (got {shards})")


user_shard_partitions = shard_partitions()
# Candidates by as-of day and user shard: each (day, shard) is one step the k8s executor can run in its own pod.
candidate_shard_partitions = dg.MultiPartitionsDefinition({"as_of": candidates_partitions, "shard": user_shard_partitions})
