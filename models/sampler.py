"""Multi-link sampler: per-relation neighbour fan-out per hop and per-epoch balanced supervision edges."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.graph import CSR, ItemGraph


@dataclass(frozen=True)
class Subgraph:
    """The compact neighbourhood of a batch of seeds, in local ids."""

    node_ids: Tensor  # (n,) global id of each local node; unique seeds first, then hop 1, hop 2, ...
    seed_index: Tensor  # (S,) local id of each seed, in the order the seeds were given
    edge_index: dict[str, Tensor]  # relation -> (2, E_r); row 0 = neighbour (message source), row 1 = target
    hop_nodes: tuple[int, ...]  # nodes known after hop h (hop_nodes[0] = unique seeds)
    hop_edges: dict[str, tuple[int, ...]]  # relation -> edges drawn up to and including hop h (hop 0 first)

    def layer_inputs(self) -> list[tuple[int, dict[str, Tensor]]]:
        """Per layer, (number of target nodes, edges): layer l of L only updates nodes within L-1-l hops
        of a seed, from the edges of the first L-l hops, since nothing further reaches the seeds."""
        hops = len(self.hop_nodes) - 1
        return [(self.hop_nodes[h - 1], {r: e[:, :self.hop_edges[r][h - 1]] for r, e in self.edge_index.items()})
                for h in range(hops, 0, -1)]


def sample_neighbours(csr: CSR, targets: Tensor, fanout: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to `fanout` distinct neighbours of each target, uniformly without replacement (fanout < 0: all).

    Returns (target position in `targets` (E,), slot in `csr.indices` (E,)).
    """
    start = csr.indptr[targets]
    degree = csr.indptr[targets + 1] - start  # (T,)
    take_all = degree <= fanout if fanout >= 0 else torch.ones_like(degree, dtype=torch.bool)

    # Targets with few neighbours keep them all.
    small = torch.nonzero(take_all).flatten()
    counts = degree[small]
    small_target = torch.repeat_interleave(small, counts)  # (E_small,)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    small_slot = start[small_target] + torch.arange(small_target.numel()) - first

    # Others draw exactly `fanout` distinct offsets with Floyd's algorithm: one vectorised step per
    # draw, so the cost is O(targets * fanout^2) however large the degrees are.
    big = torch.nonzero(~take_all).flatten()
    big_degree = degree[big]
    chosen = torch.empty((big.numel(), max(fanout, 0)), dtype=torch.long)  # (T_big, f)
    for step in range(chosen.shape[1]):
        top = big_degree - fanout + step  # this step draws from [0, top]
        draw = (torch.rand(big.numel(), generator=generator, dtype=torch.float64) * (top + 1)).long()
        draw = torch.minimum(draw, top)
        taken = (chosen[:, :step] == draw[:, None]).any(1)
        chosen[:, step] = torch.where(taken, top, draw)
    big_target = big.repeat_interleave(chosen.shape[1])
    big_slot = (start[big][:, None] + chosen).flatten()
    return torch.cat([small_target, big_target]), torch.cat([small_slot, big_slot])


def sample_hop(
    graph: ItemGraph, targets: Tensor, fanouts: Mapping[str, int], per_relation: bool, generator: torch.Generator
) -> dict[str, Tensor]:
    """One hop for every target: relation -> (2, E_r) with row 0 = neighbour global id, row 1 = target position.

    per_relation=True draws up to fanouts[r] per relation; False draws one shared sample of
    sum(fanouts) neighbours from all relations together (the ablation: rare relations get crowded out).
    Relations not in `fanouts` are not used.
    """
    if per_relation:
        hop = {}
        for r, f in fanouts.items():
            target, slot = sample_neighbours(graph.csr[r], targets, f, generator)
            hop[r] = torch.stack([graph.csr[r].indices[slot], target])
        return hop
    shared = -1 if any(f < 0 for f in fanouts.values()) else sum(fanouts.values())
    target, slot = sample_neighbours(graph.union, targets, shared, generator)
    neighbour, relation = graph.union.indices[slot], graph.union_relation[slot]
    index = {r: i for i, r in enumerate(graph.relations)}
    return {r: torch.stack([neighbour[relation == index[r]], target[relation == index[r]]]) for r in fanouts}


class NeighbourSampler:
    """Samples each seed's hop-by-hop neighbourhood into one compact subgraph, redrawn every call."""

    def __init__(
        self,
        graph: ItemGraph,
        fanouts: Sequence[int],
        generator: torch.Generator,
        per_relation: bool = True,
        relation_fanouts: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """fanouts: f_r per hop for every relation; relation_fanouts overrides it for some relations."""
        if not fanouts:
            raise ValueError("fanouts needs one entry per hop (got none); the HGNN has one hop per layer")
        overrides = dict(relation_fanouts or {})
        unknown = [r for r in overrides if r not in graph.relations]
        if unknown:
            raise ValueError(f"relations {unknown} are not in the graph (it has {list(graph.relations)})")
        wrong = {r: f for r, f in overrides.items() if len(f) != len(fanouts)}
        if wrong:
            raise ValueError(f"relation_fanouts {wrong} need one fan-out per hop ({len(fanouts)} hops)")
        self.graph = graph
        self.generator = generator
        self.per_relation = per_relation
        # hop -> relation -> f_r
        self.fanouts = [{r: int(overrides.get(r, fanouts)[h]) for r in graph.relations} for h in range(len(fanouts))]
        self._local = torch.full((graph.num_nodes,), -1, dtype=torch.long)  # global -> local, reset per call

    def sample(self, seeds: Tensor, isolated: Tensor | None = None) -> Subgraph:
        """Seeds (S,) global ids, repeats allowed -> their sampled multi-hop subgraph.

        Seeds listed in `isolated` get no neighbours, as if they had no edges."""
        local = self._local
        nodes, seed_index = torch.unique(seeds, return_inverse=True)
        local[nodes] = torch.arange(nodes.numel())
        frontier = nodes if isolated is None else nodes[~torch.isin(nodes, isolated)]
        blocks, count = [nodes], nodes.numel()
        parts: dict[str, list[Tensor]] = {r: [] for r in self.fanouts[0]}
        for hop_fanouts in self.fanouts:
            hop = sample_hop(self.graph, frontier, hop_fanouts, self.per_relation, self.generator)
            found = torch.cat([e[0] for e in hop.values()] + [torch.empty(0, dtype=torch.long)])
            new = torch.unique(found[local[found] < 0])
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            for r, e in hop.items():
                parts[r].append(torch.stack([local[e[0]], local[frontier[e[1]]]]))
            blocks.append(new)
            frontier = new  # nodes seen before already have their neighbours drawn
        node_ids = torch.cat(blocks)
        local[node_ids] = -1
        edge_index = {r: torch.cat(p, dim=1) for r, p in parts.items()}
        hop_nodes = tuple(int(n) for n in torch.cumsum(torch.tensor([b.numel() for b in blocks]), 0))
        hop_edges = {r: tuple(int(n) for n in torch.cumsum(torch.tensor([e.shape[1] for e in p]), 0))
                     for r, p in parts.items()}
        return Subgraph(node_ids, seed_index, edge_index, hop_nodes, hop_edges)


def split_edges(
    graph: ItemGraph, valid_fraction: float, generator: torch.Generator
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per relation, a random `valid_fraction` of the edges held out: (train, valid), each relation -> (2, E)."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1) (got {valid_fraction})")
    train, valid = {}, {}
    for r, e in graph.edges.items():
        order = torch.randperm(e.shape[1], generator=generator)
        n_valid = round(e.shape[1] * valid_fraction)  # per relation, so the rare relation is validated too
        valid[r], train[r] = e[:, order[:n_valid]], e[:, order[n_valid:]]
    return train, valid


def epoch_edges(
    train_edges: Mapping[str, Tensor], balanced: bool, generator: torch.Generator, limit: int = 0
) -> tuple[Tensor, Tensor]:
    """One epoch's supervision pairs, shuffled: (E, 2) (anchor, positive) and relation index (E,).

    balanced=True undersamples every relation, without replacement, to the count of the rarest
    non-empty one, redrawn each call; False uses every edge. Each edge's direction is drawn at random
    because the hinge loss treats anchor and positive differently. A `limit` > 0 keeps that many of
    the shuffled pairs, a uniform sample that keeps the relations' shares.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (got {limit})")
    sizes = [e.shape[1] for e in train_edges.values() if e.shape[1] > 0]
    target = min(sizes) if sizes else 0
    pairs, relation = [], []
    for i, e in enumerate(train_edges.values()):
        keep = torch.randperm(e.shape[1], generator=generator)[:target] if balanced else torch.arange(e.shape[1])
        pairs.append(e[:, keep].T)
        relation.append(torch.full((keep.numel(),), i, dtype=torch.long))
    all_pairs = torch.cat(pairs) if pairs else torch.empty((0, 2), dtype=torch.long)
    all_relation = torch.cat(relation) if relation else torch.empty(0, dtype=torch.long)
    flip = torch.rand(all_pairs.shape[0], generator=generator) < 0.5
    all_pairs = torch.where(flip[:, None], all_pairs.flip(1), all_pairs)
    order = torch.randperm(all_pairs.shape[0], generator=generator)
    if limit:
        order = order[:limit]
    return all_pairs[order], all_relation[order]
