"""Item graph: CSR per relation, global node index, edge counts, relation selection."""
import polars as pl
import pytest
import torch

from models.graph import build_graph, relation_names

A, P = "audiobook", "podcast"


def _nodes() -> pl.DataFrame:
    # a3 has no edges: it is still a node.
    return pl.DataFrame({"item_id": ["a1", "a2", "p1", "p2", "p3", "a3"], "item_type": [A, A, P, P, P, A]})


def _edges(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    src, dst, st, dt = zip(*rows)
    return pl.DataFrame({
        "src_item_id": src, "dst_item_id": dst, "src_type": st, "dst_type": dt,
        "relation": ["__".join(sorted(p)) for p in zip(st, dt)], "co_listeners": [1] * len(rows),
    })


TINY = [("a1", "a2", A, A), ("a1", "p1", A, P), ("a2", "p2", A, P), ("p1", "p2", P, P), ("p1", "p3", P, P)]


def _neighbours(graph, relation: str) -> list[list[int]]:
    csr = graph.csr[relation]
    return [csr.indices[csr.indptr[v]:csr.indptr[v + 1]].tolist() for v in range(graph.num_nodes)]


def test_csr_per_relation_holds_both_directions_of_each_edge():
    graph = build_graph(_edges(TINY), _nodes())
    # node ids are rows of the node frame: a1=0, a2=1, p1=2, p2=3, p3=4, a3=5
    assert graph.nodes["node_id"].to_list() == [0, 1, 2, 3, 4, 5]
    assert _neighbours(graph, "audiobook__audiobook") == [[1], [0], [], [], [], []]
    assert _neighbours(graph, "audiobook__podcast") == [[2], [3], [0], [1], [], []]
    assert _neighbours(graph, "podcast__podcast") == [[], [], [3, 4], [2], [2], []]
    assert graph.csr["audiobook__podcast"].degree().tolist() == [1, 1, 1, 1, 0, 0]


def test_union_neighbourhood_tags_each_slot_with_its_relation():
    graph = build_graph(_edges(TINY), _nodes())
    v = 2  # p1: a1 through audiobook__podcast, p2 and p3 through podcast__podcast
    lo, hi = graph.union.indptr[v], graph.union.indptr[v + 1]
    pairs = sorted(zip(graph.union.indices[lo:hi].tolist(), graph.union_relation[lo:hi].tolist()))
    assert pairs == [(0, 1), (3, 2), (4, 2)]


def test_edge_counts_and_markdown_table():
    graph = build_graph(_edges(TINY), _nodes())
    assert graph.edge_counts() == {"audiobook__audiobook": 1, "audiobook__podcast": 2, "podcast__podcast": 2}
    table = graph.edge_counts_markdown()
    assert "| audiobook__podcast | 2 | 40.0% |" in table
    assert "| total | 5 | 100.0% |" in table


def test_relations_option_keeps_only_the_named_relations():
    dropped = build_graph(_edges(TINY), _nodes(), relations=["audiobook__audiobook", "audiobook__podcast"])
    assert dropped.relations == ("audiobook__audiobook", "audiobook__podcast")
    single = build_graph(_edges(TINY), _nodes(), relations=["podcast__podcast"])
    assert single.edge_counts() == {"podcast__podcast": 2}
    assert single.union.indices.numel() == 4
    assert single.num_nodes == 6  # dropping relations never drops nodes


def test_unknown_relation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="audiobook__music"):
        build_graph(_edges(TINY), _nodes(), relations=["audiobook__music"])
    assert relation_names([P, A, P]) == ["audiobook__audiobook", "audiobook__podcast", "podcast__podcast"]


def test_edge_to_an_item_missing_from_the_nodes_is_refused():
    with pytest.raises(ValueError, match="missing from the node frame"):
        build_graph(_edges(TINY + [("a1", "p9", A, P)]), _nodes())


def test_relation_disagreeing_with_item_types_is_refused():
    edges = _edges(TINY).with_columns(relation=pl.lit("podcast__podcast"))
    with pytest.raises(ValueError, match="disagrees"):
        build_graph(edges, _nodes())


def test_duplicate_pair_is_stored_once():
    graph = build_graph(_edges(TINY + [("a2", "a1", A, A)]), _nodes())
    assert graph.edge_counts()["audiobook__audiobook"] == 1
    assert torch.equal(graph.edges["audiobook__audiobook"], torch.tensor([[0], [1]]))


def test_with_edges_rebuilds_csr_on_the_same_nodes():
    graph = build_graph(_edges(TINY), _nodes())
    fewer = graph.with_edges({r: e[:, :1] for r, e in graph.edges.items()})
    assert fewer.num_nodes == graph.num_nodes
    assert fewer.edge_counts() == {"audiobook__audiobook": 1, "audiobook__podcast": 1, "podcast__podcast": 1}
    assert _neighbours(fewer, "podcast__podcast") == [[], [], [3], [2], [], []]
