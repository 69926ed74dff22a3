"""Heterogeneous item co-listening graph: one undirected relation per type pair, stored as CSR."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

import polars as pl
import torch
from torch import Tensor

EDGE_COLUMNS = ("src_item_id", "dst_item_id", "src_type", "dst_type", "relation", "co_listeners")
NODE_COLUMNS = ("item_id", "item_type")


def relation_name(type_a: str, type_b: str) -> str:
    """The relation of an edge: its two endpoint types sorted and joined by '__'."""
    return "__".join(sorted((type_a, type_b)))


def relation_names(types: Sequence[str]) -> list[str]:
    """Every relation a graph over these node types can hold (one per unordered type pair)."""
    return [relation_name(a, b) for a, b in combinations_with_replacement(sorted(set(types)), 2)]


@dataclass(frozen=True)
class CSR:
    """Neighbours of node v are indices[indptr[v]:indptr[v + 1]] (global node ids, ascending)."""

    indptr: Tensor  # (N + 1,) int64
    indices: Tensor  # (nnz,) int64

    def degree(self) -> Tensor:
        return self.indptr[1:] - self.indptr[:-1]  # (N,)


@dataclass(frozen=True)
class ItemGraph:
    """Items as nodes (global ids = rows of `nodes`), one undirected relation per type pair."""

    nodes: pl.DataFrame  # item_id, item_type, node_id (= row index)
    types: tuple[str, ...]  # sorted node types
    node_type: Tensor  # (N,) int64 index into types
    edges: dict[str, Tensor]  # relation -> (2, E_r) undirected pairs, each once, row 0 < row 1
    csr: dict[str, CSR]  # relation -> neighbours through that relation, both directions inserted
    union: CSR  # all kept relations together: the relation-blind neighbourhood
    union_relation: Tensor  # (nnz,) index into `relations` of each slot of `union`

    @property
    def num_nodes(self) -> int:
        return self.nodes.height

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(self.edges)

    def edge_counts(self) -> dict[str, int]:
        """Undirected edges per relation (each pair counted once)."""
        return {r: int(e.shape[1]) for r, e in self.edges.items()}

    def edge_counts_markdown(self) -> str:
        """Per-relation edge counts as a Markdown table; the imbalance is why the sampler balances."""
        counts = self.edge_counts()
        total = sum(counts.values())
        lines = ["| relation | edges | share |", "| --- | ---: | ---: |"]
        for r, n in counts.items():
            lines.append(f"| {r} | {n:,} | {n / total if total else 0.0:.1%} |")
        lines.append(f"| total | {total:,} | {1.0 if total else 0.0:.1%} |")
        return "\n".join(lines)

    def with_edges(self, edges: dict[str, Tensor]) -> ItemGraph:
        """The same nodes with other edges per relation (e.g. the training split)."""
        return _assemble(self.nodes, self.types, self.node_type, edges)


def build_graph(
    edges: pl.DataFrame, nodes: pl.DataFrame, relations: Sequence[str] | None = None
) -> ItemGraph:
    """Graph from `features.co_listen_edges` rows and the graph-type items (every item is a node).

    `relations` keeps only those relations (ablations: drop a relation, single-relation graph);
    None keeps every type pair of the node frame.
    """
    _require_columns(edges, EDGE_COLUMNS, "edges")
    _require_columns(nodes, NODE_COLUMNS, "nodes")
    duplicated = nodes.filter(pl.col("item_id").is_duplicated())["item_id"].unique()
    if duplicated.len():
        raise ValueError(
            f"nodes: {duplicated.len()} item_id values appear more than once "
            f"(e.g. {duplicated.head(3).to_list()}); pass one row per item"
        )
    types = tuple(sorted(nodes["item_type"].unique().to_list()))
    possible = relation_names(types)
    keep = possible if relations is None else list(relations)
    unknown = [r for r in keep if r not in possible]
    if unknown:
        raise ValueError(f"relations {unknown} are not pairs of the node types {types}; use some of {possible}")
    keep = [r for r in possible if r in keep]  # canonical order whatever order was asked for

    index = nodes.select(
        pl.col("item_id"), pl.col("item_type"), pl.int_range(pl.len(), dtype=pl.Int64).alias("node_id")
    )
    mapped = (
        edges.select("src_item_id", "dst_item_id", "relation")
        .join(index.rename({"item_id": "src_item_id", "item_type": "src_node_type", "node_id": "src"}),
              on="src_item_id", how="left")
        .join(index.rename({"item_id": "dst_item_id", "item_type": "dst_node_type", "node_id": "dst"}),
              on="dst_item_id", how="left")
    )
    missing = mapped.filter(pl.col("src").is_null() | pl.col("dst").is_null())
    if missing.height:
        example = missing.select("src_item_id", "dst_item_id").head(3).rows()
        raise ValueError(
            f"edges: {missing.height} edges name items missing from the node frame (e.g. {example}); "
            "pass every graph-type item as a node or filter the edges to the graph types"
        )
    mapped = mapped.with_columns(
        pl.concat_str(pl.min_horizontal("src_node_type", "dst_node_type"), pl.lit("__"),
                      pl.max_horizontal("src_node_type", "dst_node_type")).alias("node_relation")
    )
    wrong = mapped.filter(pl.col("relation") != pl.col("node_relation"))
    if wrong.height:
        example = wrong.select("src_item_id", "dst_item_id", "relation", "node_relation").head(3).rows()
        raise ValueError(
            f"edges: {wrong.height} edges carry a relation that disagrees with their items' types "
            f"(src, dst, relation, from types: {example}); rebuild features.co_listen_edges"
        )
    loops = mapped.filter(pl.col("src") == pl.col("dst"))
    if loops.height:
        raise ValueError(f"edges: {loops.height} self-loops (e.g. {loops['src_item_id'].head(3).to_list()}); "
                         "an item is never its own co-listened neighbour")

    node_type_ids = {t: i for i, t in enumerate(types)}
    node_type = _to_tensor(index["item_type"].replace_strict(node_type_ids, return_dtype=pl.Int64))
    per_relation: dict[str, Tensor] = {}
    for r in keep:
        part = mapped.filter(pl.col("relation") == r)
        per_relation[r] = torch.stack([_to_tensor(part["src"]), _to_tensor(part["dst"])])  # (2, E_r)
    return _assemble(index, types, node_type, per_relation)


def _assemble(nodes: pl.DataFrame, types: tuple[str, ...], node_type: Tensor,
              edges: dict[str, Tensor]) -> ItemGraph:
    n = nodes.height
    canonical: dict[str, Tensor] = {}
    csr: dict[str, CSR] = {}
    for r, pair in edges.items():
        lo, hi = torch.minimum(pair[0], pair[1]), torch.maximum(pair[0], pair[1])
        key = torch.unique(lo * n + hi)  # sorted; also drops repeated pairs
        canonical[r] = torch.stack([key // n, key % n])  # (2, E_r)
        src = torch.cat([canonical[r][0], canonical[r][1]])  # both directions: undirected
        dst = torch.cat([canonical[r][1], canonical[r][0]])
        order = torch.argsort(src * n + dst)
        csr[r] = CSR(_indptr(src, n), dst[order])
    # The relation-blind union: what a single shared fan-out draws from (sampler ablation).
    src = torch.cat([torch.cat([e[0], e[1]]) for e in canonical.values()] + [torch.empty(0, dtype=torch.long)])
    dst = torch.cat([torch.cat([e[1], e[0]]) for e in canonical.values()] + [torch.empty(0, dtype=torch.long)])
    rel = torch.cat([torch.full((2 * e.shape[1],), i, dtype=torch.long) for i, e in enumerate(canonical.values())]
                    + [torch.empty(0, dtype=torch.long)])
    order = torch.argsort(src * n + dst, stable=True)
    return ItemGraph(nodes, types, node_type, canonical, csr, CSR(_indptr(src, n), dst[order]), rel[order])


def _indptr(src: Tensor, n: int) -> Tensor:
    counts = torch.bincount(src, minlength=n)
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])  # (N + 1,)


def _to_tensor(column: pl.Series) -> Tensor:
    return torch.from_numpy(column.cast(pl.Int64).to_numpy().copy())


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (got {frame.columns}); expected {list(columns)}")
