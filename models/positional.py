"""Where each item sits in the co-listening graph, as node features beside its text.

Text tells the HGNN what an item is about, not which listeners it shares: two items on one topic can
live in different corners of the graph. A few leading singular vectors of the normalised adjacency
(all relations together) place every item in the graph, so the GraphSAGE layers can tell those
corners apart. Items without edges (new releases) get zeros and are embedded from their text alone.
"""
import torch
from torch import Tensor

from models.graph import ItemGraph


def spectral_positions(graph: ItemGraph, dim: int, seed: int = 0) -> Tensor:
    """(N, dim) unit rows from the top singular vectors of D^-1/2 A D^-1/2; zero rows for isolated items.

    Randomised SVD (torch.svd_lowrank) on the sparse adjacency: cost grows with the edges, not N².
    Signs and rotations of the basis differ between graphs, so positions only compare within one graph.
    """
    n = graph.num_nodes
    positions = torch.zeros(n, dim)
    degree = graph.union.degree()
    if dim < 1 or n < 2 or not int(degree.sum()):
        return positions
    rows = torch.repeat_interleave(torch.arange(n), degree)
    cols = graph.union.indices
    scale = degree.clamp(min=1).double().rsqrt()
    values = (scale[rows] * scale[cols]).float()
    adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=True).coalesce()
    rank = min(dim, n - 1)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
        torch.manual_seed(seed)
        u, s, _ = torch.svd_lowrank(adjacency, q=min(rank + 8, n), niter=4)
    vectors = u[:, :rank] * s[:rank].sqrt()
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)
    vectors[degree == 0] = 0.0
    positions[:, :rank] = vectors
    return positions
