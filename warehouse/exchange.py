"""Parquet exchange of sharded candidate steps: one file per (as-of day, user shard), local or object storage."""
from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import polars as pl

# DuckDB reads and writes these through an extension that must already be installed: installing one
# downloads it, and a pod (or this machine) may have no internet. s3 and gs go through httpfs's S3 API;
# az has its own extension.
REMOTE_EXTENSIONS = {"s3": "httpfs", "gs": "httpfs", "az": "azure"}
CANDIDATES = "serving/candidates"
PART = "part.parquet"
SHARD_FOLDER = re.compile(r"shard=(\d+)-of-(\d+)")
GLOB_CHARACTERS = set("*?[]{}")


class ExchangeError(RuntimeError):
    """The exchange cannot be read or written as asked; the message says what to fix."""


def check_uri(uri: str) -> str:
    """The exchange URI as used: '' (off), an absolute local directory, or s3://, gs://, az:// with a bucket.

    Relative directories and file:///path become absolute paths. Raises ValueError naming what is allowed.
    """
    uri = uri.strip()
    if not uri:
        return ""
    allowed = "'' (off), a local directory, file:///absolute/path, or a URI starting with s3://, gs:// or az://"
    if GLOB_CHARACTERS & set(uri):
        raise ValueError(f"must not contain glob characters {''.join(sorted(GLOB_CHARACTERS))}: DuckDB would read "
                         f"them as patterns (got {uri!r})")
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return str(Path(uri).expanduser().absolute())
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"a file URI needs an absolute path, file:///like/this (got {uri!r})")
        return str(Path(rest))
    if scheme in ("http", "https"):
        raise ValueError(f"must be {allowed}; DuckDB reads {scheme}:// but cannot write or list files there, which "
                         f"shards need (an S3-compatible store behind {scheme}:// is s3:// with DUCKDB_S3_ENDPOINT "
                         f"set) (got {uri!r})")
    if scheme not in REMOTE_EXTENSIONS:
        raise ValueError(f"must be {allowed} (got {uri!r})")
    if not rest.strip("/"):
        raise ValueError(f"needs a bucket or container after {scheme}:// (got {uri!r})")
    return f"{scheme}://{rest.rstrip('/')}"


def is_remote(uri: str) -> bool:
    scheme, separator, _ = uri.partition("://")
    return bool(separator) and scheme in REMOTE_EXTENSIONS


def day_uri(uri: str, as_of: dt.date) -> str:
    """The folder of one as-of day's candidate shards."""
    return f"{_resolved(uri)}/{CANDIDATES}/as_of={as_of.isoformat()}"


def shard_uri(uri: str, as_of: dt.date, index: int, shards: int) -> str:
    """The one file of shard `index` of `shards` for an as-of day."""
    if not 0 <= index < shards:
        raise ValueError(f"need 0 <= index < shards (got index {index}, shards {shards})")
    return f"{day_uri(uri, as_of)}/shard={index:02d}-of-{shards:02d}/{PART}"


def write_candidate_shard(con: duckdb.DuckDBPyConnection, uri: str, as_of: dt.date, index: int, shards: int,
                          chunks: Iterable[pl.DataFrame], schema: Mapping[str, pl.DataType]) -> int:
    """Write one shard's candidate rows (frames of `schema`, possibly none) as its Parquet file; the row count.

    The file replaces any earlier one of the same shard, so a retried step never counts twice. A local
    file is written beside its place and renamed over it, and an object store shows a multipart upload only
    once it is complete, so readers see the old shard or the new one, never half of one.
    """
    uri = _resolved(uri)
    target = shard_uri(uri, as_of, index, shards)
    _ready(con, uri)
    con.register("exchange_empty", pl.DataFrame(schema=dict(schema)))
    con.execute("create or replace temp table exchange_shard as select * from exchange_empty")
    con.unregister("exchange_empty")
    for chunk in chunks:
        con.register("exchange_chunk", chunk)
        con.execute("insert into exchange_shard by name select * from exchange_chunk")
        con.unregister("exchange_chunk")
    rows = con.execute("select count(*) from exchange_shard").fetchall()[0][0]
    written = target
    if not is_remote(uri):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        written = str(Path(target).with_name(f".{PART}.{uuid.uuid4().hex}.tmp"))
    try:
        # COPY takes no parameter for its target, so the path is a quoted literal with quotes doubled.
        con.execute(f"copy (select * from exchange_shard order by user_id, rank) to {_literal(written)} "
                    "(format parquet)")
    except duckdb.Error as error:
        if written != target:
            Path(written).unlink(missing_ok=True)
        raise ExchangeError(f"could not write {target} ({_first_line(error)}); check that the exchange is "
                            "reachable and writable (credentials, bucket, disk)") from error
    finally:
        con.execute("drop table if exists exchange_shard")
    if written != target:
        os.replace(written, target)
    return rows


def candidate_shard_files(con: duckdb.DuckDBPyConnection, uri: str, as_of: dt.date,
                          shards: int | None = None) -> list[str]:
    """The shard files of an as-of day, by index, after checking they are one complete set.

    Complete: every index 0..MM-1 of one shard count MM exactly once (MM = `shards` when given), and no
    other file. Folder names are parsed as numbers, so shard=3-of-16 beside shard=03-of-16 is a duplicate.
    Files whose names start with '.' are writes in progress (or abandoned by a killed step) and are skipped.
    """
    uri = _resolved(uri)
    folder = day_uri(uri, as_of)
    _ready(con, uri)
    try:
        listed = con.execute("select file from glob($pattern)", {"pattern": f"{folder}/*/*"}).fetchall()
    except duckdb.Error as error:
        raise ExchangeError(f"could not list {folder} ({_first_line(error)}); check that the exchange is reachable "
                            "and readable") from error
    found: dict[int, list[str]] = {}
    counts: dict[int, list[str]] = {}
    unexpected: list[str] = []
    for (file,) in sorted(listed):
        parent, name = file.rsplit("/", 2)[-2:]
        if name.startswith("."):
            continue
        match = SHARD_FOLDER.fullmatch(parent)
        if not match or name != PART:
            unexpected.append(f"{parent}/{name}")
            continue
        index, count = int(match.group(1)), int(match.group(2))
        found.setdefault(index, []).append(file)
        counts.setdefault(count, []).append(parent)
    day = f"as_of={as_of.isoformat()}"
    if unexpected:
        raise ExchangeError(f"{folder}: unexpected files {unexpected}; a shard folder holds only "
                            f"shard=NN-of-MM/{PART}, remove the others")
    if not found:
        raise ExchangeError(f"no candidate shards for {day} under {uri}/{CANDIDATES}; run the shard steps first")
    if len(counts) > 1:
        raise ExchangeError(f"the candidate shards of {day} disagree on the shard count: "
                            f"{dict(sorted(counts.items()))}; remove the folders of the stale run and re-run its shards")
    (count,) = counts
    if shards is not None and count != shards:
        raise ExchangeError(f"the exchange holds shards of {count} for {day}, this run expects {shards}; remove "
                            f"{folder} and re-run the shard steps")
    beyond = sorted(index for index in found if index >= count)
    if beyond:
        raise ExchangeError(f"shard indices {beyond} of {day} are out of range for {count} shards; remove them")
    twice = {index: files for index, files in found.items() if len(files) > 1}
    if twice:
        raise ExchangeError(f"shards present more than once for {day}: {twice}; keep one folder per shard")
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise ExchangeError(f"missing shards {missing} of {count} for {day} ({len(found)} of {count} present); "
                            "re-run those shard steps")
    return [found[index][0] for index in range(count)]


def read_candidate_shards(con: duckdb.DuckDBPyConnection, uri: str, as_of: dt.date,
                          shards: int | None = None) -> duckdb.DuckDBPyRelation:
    """All candidate rows of an as-of day from a complete set of shards, with as_of and shard from the folders.

    Raises ExchangeError when the set is incomplete or a user appears in more than one shard.
    """
    files = candidate_shard_files(con, uri, as_of, shards)
    relation = con.sql(
        "select * from read_parquet($files, hive_partitioning = true, hive_types = {'as_of': date, 'shard': varchar})",
        params={"files": files},
    )
    shared = relation.aggregate("user_id, list(distinct shard order by shard) as shards", "user_id") \
        .filter("len(shards) > 1").order("user_id").limit(3).fetchall()
    if shared:
        raise ExchangeError(f"users in more than one shard of as_of={as_of.isoformat()}, e.g. {shared}: the shards "
                            "were not cut by one user hash; remove the folder and re-run the shard steps")
    return relation


def _ready(con: duckdb.DuckDBPyConnection, uri: str) -> None:
    """Load the extension a remote URI needs; never install it (that needs the network)."""
    if not is_remote(uri):
        return
    extension = REMOTE_EXTENSIONS[uri.partition("://")[0]]
    try:
        con.load_extension(extension)
    except duckdb.Error as error:
        raise ExchangeError(
            f"exchange_uri {uri!r} needs DuckDB's {extension} extension, which cannot be loaded here "
            f"({_first_line(error)}). Install it where there is network access, e.g. in the image build: "
            f"python -c \"import duckdb; duckdb.connect().install_extension('{extension}')\"; "
            "or set exchange_uri to a local directory"
        ) from error


def _resolved(uri: str) -> str:
    try:
        resolved = check_uri(uri)
    except ValueError as error:
        raise ExchangeError(f"exchange_uri {error}") from None
    if not resolved:
        raise ExchangeError("no exchange configured: set CROSSFADE_EXCHANGE_URI (exchange_uri) to a directory or "
                            "an s3://, gs:// or az:// prefix that every shard step can reach")
    return resolved


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
