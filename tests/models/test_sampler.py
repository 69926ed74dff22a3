"""Multi-link sampler: per-relation fan-out bounds, balanced epochs, seeding, and both switches off."""
from collections import Counter

import polars as pl
import pytest
import torch

from models.graph import ItemGraph, build_graph
from models.sampler import NeighbourSampler, epoch_edges, sample_neighbours, split_edges

A, P = "audiobook", "podcast"
COUNTS = {"audiobook__audiobook": 40, "audiobook__podcast": 300, "podcast__podcast": 900}


def random_graph(n_a: int = 30, n_p: int = 90, counts: dict[str, int] = COUNTS, seed: int = 0) -> ItemGraph:
    g = torch.Generator().manual_seed(seed)
    ids = {A: [f"a{i}" for i in range(n_a)], P: [f"p{i}" for i in range(n_p)]}
    frames = []
    for relation, m in counts.items():
        ta, tb = relation.split("__")
        a = torch.randint(len(ids[ta]), (4 * m,), generator=g).tolist()
        b = torch.randint(len(ids[tb]), (4 * m,), generator=g).tolist()
        pairs = {tuple(sorted((ids[ta][i], ids[tb][j]))) for i, j in zip(a, b) if (ta, i) != (tb, j)}
        pairs = sorted(pairs)[:m]
        types = {x: t for t in (A, P) for x in ids[t]}
        frames.append(pl.DataFrame({
            "src_item_id": [s for s, _ in pairs], "dst_item_id": [d for _, d in pairs],
            "src_type": [types[s] for s, _ in pairs], "dst_type": [types[d] for _, d in pairs],
            "relation": relation, "co_listeners": 1,
        }))
    nodes = pl.DataFrame({"item_id": ids[A] + ids[P], "item_type": [A] * n_a + [P] * n_p})
    return build_graph(pl.concat(frames), nodes)


def star_graph(podcasts: int, audiobooks: int) -> ItemGraph:
    """p0 joined to p1..p{podcasts} and to a0..a{audiobooks - 1}; p0 is node 0."""
    ids = [f"p{i}" for i in range(podcasts + 1)] + [f"a{i}" for i in range(audiobooks)]
    types = [P] * (podcasts + 1) + [A] * audiobooks
    frame = pl.DataFrame({"src_item_id": "p0", "dst_item_id": ids[1:], "src_type": P, "dst_type": types[1:],
                          "relation": ["__".join(sorted((P, t))) for t in types[1:]], "co_listeners": 1})
    relations = ["podcast__podcast"] + (["audiobook__podcast"] if audiobooks else [])
    return build_graph(frame, pl.DataFrame({"item_id": ids, "item_type": types}), relations=relations)


def true_pairs(graph: ItemGraph, relation: str) -> set[tuple[int, int]]:
    e = graph.edges[relation]
    return set(zip(e[0].tolist(), e[1].tolist())) | set(zip(e[1].tolist(), e[0].tolist()))


def per_target(sub, relation: str) -> Counter:
    return Counter(sub.node_ids[sub.edge_index[relation][1]].tolist())


@pytest.fixture(scope="module")
def graph() -> ItemGraph:
    return random_graph()


def test_sampled_neighbours_are_true_neighbours_within_fan_out(graph):
    fanouts = {"audiobook__audiobook": (3, 2), "audiobook__podcast": (4, 1), "podcast__podcast": (5, 2)}
    sampler = NeighbourSampler(graph, (1, 1), torch.Generator().manual_seed(0), relation_fanouts=fanouts)
    seeds = torch.tensor([0, 5, 5, 40, 77, 119])
    sub = sampler.sample(seeds)
    assert torch.equal(sub.node_ids[sub.seed_index], seeds)
    assert sub.node_ids.unique().numel() == sub.node_ids.numel()
    for r in graph.relations:
        e = sub.edge_index[r]
        sampled = set(zip(sub.node_ids[e[0]].tolist(), sub.node_ids[e[1]].tolist()))
        assert sampled <= true_pairs(graph, r)
        hop0 = e[:, :sub.hop_edges[r][0]]
        assert (hop0[1] < sub.hop_nodes[0]).all()  # hop 0 edges point at seeds
        counts = Counter(hop0[1].tolist())
        assert max(counts.values(), default=0) <= fanouts[r][0]
        # a seed with few neighbours keeps all of them
        degree = graph.csr[r].degree()
        for local, node in enumerate(sub.node_ids[:sub.hop_nodes[0]].tolist()):
            assert counts.get(local, 0) == min(int(degree[node]), fanouts[r][0])
        assert max(Counter(e[1, sub.hop_edges[r][0]:].tolist()).values(), default=0) <= fanouts[r][1]


def test_each_node_draws_its_neighbours_once(graph):
    sub = NeighbourSampler(graph, (4, 4), torch.Generator().manual_seed(1)).sample(torch.arange(10))
    for r in graph.relations:
        assert max(per_target(sub, r).values()) <= 4  # a node reached twice is not expanded twice


def test_isolated_seeds_get_no_neighbours(graph):
    seeds = torch.tensor([3, 40, 41, 100])
    sub = NeighbourSampler(graph, (4, 4), torch.Generator().manual_seed(3)).sample(seeds, torch.tensor([40, 100]))
    for r in graph.relations:
        targets = set(sub.node_ids[sub.edge_index[r][1, :sub.hop_edges[r][0]]].tolist())
        assert not targets & {40, 100}
    assert any(3 in per_target(sub, r) for r in graph.relations)


def test_layer_inputs_trim_to_what_reaches_the_seeds(graph):
    sub = NeighbourSampler(graph, (3, 3), torch.Generator().manual_seed(2)).sample(torch.tensor([1, 2, 3]))
    (first_targets, first_edges), (last_targets, last_edges) = sub.layer_inputs()
    assert first_targets == sub.hop_nodes[1] and last_targets == sub.hop_nodes[0] == 3
    for r in graph.relations:
        assert first_edges[r].shape[1] == sub.edge_index[r].shape[1]
        assert (last_edges[r][1] < 3).all() and (first_edges[r][1] < first_targets).all()


def test_uniform_without_replacement():
    graph = star_graph(podcasts=5, audiobooks=0)
    csr = graph.csr["podcast__podcast"]
    hub, degree = 0, 5  # p0
    target, slot = sample_neighbours(csr, torch.full((3000,), hub), 2, torch.Generator().manual_seed(0))
    assert torch.equal(target, torch.arange(3000).repeat_interleave(2))
    pairs = slot.view(3000, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()  # without replacement
    draws = Counter(csr.indices[slot].tolist())
    expected = 3000 * 2 / degree
    assert len(draws) == degree and all(abs(n - expected) < 0.1 * expected for n in draws.values())


def test_redrawn_each_call_and_deterministic_by_seed(graph):
    seeds = torch.arange(0, 120, 7)
    a = NeighbourSampler(graph, (2, 2), torch.Generator().manual_seed(5))
    b = NeighbourSampler(graph, (2, 2), torch.Generator().manual_seed(5))
    first, again = a.sample(seeds), a.sample(seeds)
    assert not torch.equal(first.edge_index["podcast__podcast"], again.edge_index["podcast__podcast"])
    twin = b.sample(seeds)
    assert torch.equal(first.node_ids, twin.node_ids)
    assert all(torch.equal(first.edge_index[r], twin.edge_index[r]) for r in graph.relations)


def test_shared_fan_out_ignores_relations():
    graph = star_graph(podcasts=40, audiobooks=2)  # p0: 40 podcast and 2 audiobook neighbours
    hub = torch.tensor([0])  # p0
    per_rel = NeighbourSampler(graph, (3,), torch.Generator().manual_seed(0))
    shared = NeighbourSampler(graph, (3,), torch.Generator().manual_seed(0), per_relation=False)
    rare_per_rel = sum(per_rel.sample(hub).edge_index["audiobook__podcast"].shape[1] for _ in range(200))
    rare_shared, total_shared = 0, 0
    for _ in range(200):
        sub = shared.sample(hub)
        rare_shared += sub.edge_index["audiobook__podcast"].shape[1]
        total_shared += sum(e.shape[1] for e in sub.edge_index.values())
    assert rare_per_rel == 400  # both audiobooks every time
    assert total_shared == 200 * 6  # one draw of 3 + 3 from all 42 neighbours
    assert rare_shared < 200 * 6 * 4 / 42  # about 6 * 2/42 per draw: the rare relation is crowded out


def test_dropped_relation_is_never_sampled():
    full = random_graph()
    kept = ("audiobook__podcast", "podcast__podcast")
    edges = pl.DataFrame({"src_item_id": ["a0"], "dst_item_id": ["p0"], "src_type": [A], "dst_type": [P],
                          "relation": ["audiobook__podcast"], "co_listeners": [1]})
    graph = build_graph(edges, full.nodes.select("item_id", "item_type"), relations=list(kept))
    sub = NeighbourSampler(graph, (3, 3), torch.Generator().manual_seed(0)).sample(torch.tensor([0, 30]))
    assert tuple(sub.edge_index) == kept
    assert sub.edge_index["audiobook__podcast"].shape[1] == 2  # a0 <-> p0, drawn from both seeds


def test_balanced_epochs_have_equal_counts_and_are_redrawn(graph):
    g = torch.Generator().manual_seed(0)
    pairs, relation = epoch_edges(graph.edges, balanced=True, generator=g)
    assert Counter(relation.tolist()) == {0: 40, 1: 40, 2: 40}
    for i, r in enumerate(graph.relations):
        chosen = {tuple(sorted(p)) for p in pairs[relation == i].tolist()}
        assert len(chosen) == 40 and chosen <= {tuple(p) for p in graph.edges[r].T.tolist()}
    again, relation_again = epoch_edges(graph.edges, balanced=True, generator=g)
    assert Counter(relation_again.tolist()) == {0: 40, 1: 40, 2: 40}
    pp = graph.relations.index("podcast__podcast")
    assert {tuple(sorted(p)) for p in pairs[relation == pp].tolist()} != \
        {tuple(sorted(p)) for p in again[relation_again == pp].tolist()}


def test_unbalanced_epoch_uses_every_edge_once(graph):
    pairs, relation = epoch_edges(graph.edges, balanced=False, generator=torch.Generator().manual_seed(0))
    assert Counter(relation.tolist()) == {0: 40, 1: 300, 2: 900}
    undirected = sorted(tuple(sorted(p)) for p in pairs.tolist())
    assert undirected == sorted(tuple(p) for e in graph.edges.values() for p in e.T.tolist())


def test_a_limit_keeps_a_uniform_sample_of_the_epoch(graph):
    pairs, relation = epoch_edges(graph.edges, balanced=False, generator=torch.Generator().manual_seed(0), limit=620)
    counts = Counter(relation.tolist())
    assert len(pairs) == 620 and sum(counts.values()) == 620
    assert 300 < counts[2] < 600 and counts[0] < 60  # about half of each relation: 20, 150 and 450 expected
    for i, r in enumerate(graph.relations):
        assert {tuple(sorted(p)) for p in pairs[relation == i].tolist()} <= {tuple(p) for p in graph.edges[r].T.tolist()}
    balanced, _ = epoch_edges(graph.edges, balanced=True, generator=torch.Generator().manual_seed(0), limit=10_000)
    assert len(balanced) == 120  # a limit above the epoch keeps it whole
    with pytest.raises(ValueError, match="limit must be >= 0"):
        epoch_edges(graph.edges, balanced=True, generator=torch.Generator(), limit=-1)


def test_epoch_is_shuffled_and_seeded(graph):
    a, _ = epoch_edges(graph.edges, True, torch.Generator().manual_seed(9))
    b, _ = epoch_edges(graph.edges, True, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    first_relation = epoch_edges(graph.edges, True, torch.Generator().manual_seed(9))[1]
    assert not torch.equal(first_relation, first_relation.sort().values)


def test_split_holds_out_ten_percent_per_relation(graph):
    train, valid = split_edges(graph, 0.1, torch.Generator().manual_seed(0))
    for r, e in graph.edges.items():
        assert valid[r].shape[1] == round(e.shape[1] * 0.1)
        held = {tuple(p) for p in valid[r].T.tolist()}
        kept = {tuple(p) for p in train[r].T.tolist()}
        assert not held & kept and held | kept == {tuple(p) for p in e.T.tolist()}
    again, _ = split_edges(graph, 0.1, torch.Generator().manual_seed(0))
    assert all(torch.equal(train[r], again[r]) for r in graph.relations)
