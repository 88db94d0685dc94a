"""Exact kNN graphs computed in row blocks (never an N×N matrix).

Conventions (PyG's): ``edge_index[0]`` is the neighbour ``j`` (message source) and
``edge_index[1]`` the node ``i`` whose neighbours they are (message target). Each
node has exactly ``k`` incoming edges, so rows of the adjacency ``W[i, j]`` are the
kNN lists. Memory is ``O(N·k + block·N)``.

Choices, all explicit arguments:

* ``loop=True`` keeps the node itself as a candidate. For cosine similarity it is
  always the row maximum, so it is one of the ``k`` neighbours (MMRec parity for
  FREEDOM, LATTICE, MGCN). ``loop=False`` excludes it, giving ``k`` other nodes.
* ``weighted=True`` keeps the similarity as the edge weight (LATTICE, MGCN);
  ``weighted=False`` gives binary weights (FREEDOM).
* Ties are broken by ``torch.topk`` on the CPU, which is deterministic for the same
  input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmgraph.utils.precision import dense_fp32, fp32_region


def _auto_block(n: int, budget: int = 2**25) -> int:
    return max(1, min(n, budget // max(1, n)))


def _topk_blocks(sim_fn, n_rows: int, n_cols: int, k: int, loop: bool, batch_size: int | None):
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    kk = k if loop else k + 1
    if kk > n_cols:
        raise ValueError(f"k={k} (loop={loop}) needs at least {kk} nodes, got {n_cols}")
    bs = batch_size or _auto_block(n_cols)
    vals, idxs = [], []
    for start in range(0, n_rows, bs):
        end = min(start + bs, n_rows)
        sim = sim_fn(start, end)  # [B, N]
        rows = torch.arange(end - start)
        if not loop:
            sim[rows, torch.arange(start, end)] = float("-inf")
        v, ix = torch.topk(sim, k, dim=1)
        vals.append(v)
        idxs.append(ix)
    return torch.cat(vals), torch.cat(idxs)  # [N, k], [N, k]


def _to_edges(vals: Tensor, idx: Tensor, weighted: bool) -> tuple[Tensor, Tensor]:
    n, k = idx.shape
    target = torch.arange(n).repeat_interleave(k)
    edge_index = torch.stack([idx.reshape(-1), target])
    weight = vals.reshape(-1).clone() if weighted else torch.ones(n * k)
    return edge_index, weight


#: Unit roundoff of bfloat16 (8-bit significand, round to nearest).
BF16_EPS = 2.0**-8


def bf16_dot_error_bound(num_features: int) -> float:
    """Bound on ``|bf16 cosine − exact cosine|`` for unit vectors: both inputs rounded (``2u + u²``), the
    product rounded to bf16 (``u``), fp32 accumulation over ``F`` terms (``F · 2⁻²³``, generous)."""
    u = BF16_EPS
    return 3 * u + u * u + num_features * 2.0**-23


@torch.no_grad()
def topk_cosine(x: Tensor, k: int, *, loop: bool = True, batch_size: int | None = None,
                precision: str = "fp32", candidates: int | None = None,
                certify: str = "observed") -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine neighbours of every row of ``x`` in row blocks.

    Args:
        x: ``[N, F]`` features.
        k: neighbours per node.
        loop: include the node itself as a candidate (default: ``True``).
        batch_size: rows per block (default: about 32M similarity entries per block).
        precision: ``'fp32'``, or ``'bf16'``: each block's similarities are computed in bfloat16
            (AMX on recent x86 CPUs, tensor cores on GPUs) only to pick ``candidates`` per row, which
            are then re-scored exactly in fp32. A row is **certified** when its k-th exact value
            exceeds the largest similarity any non-candidate can have: the lowest candidate's bf16
            value plus a margin (``certify``); the rows that are not are recomputed in fp32.
            (default: ``'fp32'``)
        candidates: candidates per row for ``bf16`` (default: ``2k + 10``).
        certify: the margin. ``'bound'``: the worst-case bf16 error (:func:`bf16_dot_error_bound`,
            ≈ 0.012; the result then equals fp32 whatever the data, ties aside, but on features whose
            cosines crowd together most rows fall back to fp32). ``'observed'``: 4× the largest
            error bf16 actually made on the ``N·C`` candidate pairs, capped by the worst case: a
            heuristic (the pairs outside the candidates see rounding errors of the same distribution,
            not a proof), measured at 100 % identical neighbour sets in ``benchmarks/bench_knn.py``.
            (default: ``'observed'``)

    Returns:
        ``(values [N, k], indices [N, k])``, each row sorted by decreasing similarity.
    """
    xn = torch.nn.functional.normalize(x.float(), dim=1)
    n = xn.size(0)
    if precision == "fp32":
        return _topk_blocks(lambda s, e: xn[s:e] @ xn.t(), n, n, k, loop, batch_size)
    if precision != "bf16":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if certify not in ("bound", "observed"):
        raise ValueError(f"certify must be 'bound' or 'observed', got {certify!r}")
    kk = k if loop else k + 1
    c = min(n - (0 if loop else 1), candidates or 2 * k + 10)
    if c < k:
        raise ValueError(f"k={k} (loop={loop}) needs at least {kk} nodes, got {n}")
    xb = xn.to(torch.bfloat16)
    cand_v, cand_i = _topk_blocks(lambda s, e: xb[s:e] @ xb.t(), n, n, c, loop, batch_size)  # bf16 top-c
    cand_v = cand_v.float()
    vals, idx, observed = _rerank(xn, cand_i, k, cand_v)
    eps = bf16_dot_error_bound(xn.size(1)) if certify == "bound" else min(bf16_dot_error_bound(xn.size(1)),
                                                                          4 * observed)
    unsure = ~(vals[:, -1] > cand_v[:, -1] + eps) if c < n - (0 if loop else 1) else torch.zeros(n, dtype=torch.bool)
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(1)

        def exact_rows(s: int, e: int) -> Tensor:
            sim = xn[rows[s:e]] @ xn.t()
            if not loop:  # the node itself is not a candidate
                sim[torch.arange(e - s), rows[s:e]] = float("-inf")
            return sim

        vals[rows], idx[rows] = _topk_blocks(exact_rows, rows.numel(), n, k, True, batch_size)
    topk_cosine.last_fallback_rows = int(unsure.sum())  # diagnostics for benchmarks
    topk_cosine.last_margin = eps
    return vals, idx


def _rerank(xn: Tensor, cand: Tensor, k: int, approx: Tensor | None = None,
            chunk: int = 64) -> tuple[Tensor, Tensor, float]:
    """Exact fp32 cosines of each row with its candidates, the top ``k`` kept (sorted).

    Small row chunks keep the gathered ``[chunk, C, F]`` candidates in cache (measured on 20,000 x
    4,096: chunk 64 with ``einsum`` 1.3 s, chunk 256 with ``bmm`` 4.6 s, 2 threads).
    """
    vals, idx, err = [], [], 0.0
    for s in range(0, cand.size(0), chunk):
        c = cand[s:s + chunk]
        exact = torch.einsum("bf,bcf->bc", xn[s:s + c.size(0)], xn[c])  # [B, C]
        if approx is not None:  # the bf16 error actually made on these pairs
            err = max(err, float((exact - approx[s:s + c.size(0)]).abs().max()))
        v, j = torch.topk(exact, k, dim=1)
        vals.append(v)
        idx.append(torch.gather(c, 1, j))
    return torch.cat(vals), torch.cat(idx), err


def knn_graph(
    x: Tensor, k: int, *, loop: bool = True, weighted: bool = True, batch_size: int | None = None,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Exact cosine kNN graph of the rows of ``x`` (``precision``: see :func:`topk_cosine`).

    Returns:
        ``(edge_index [2, N·k], edge_weight [N·k])``: edge ``j -> i`` for each of
        ``i``'s ``k`` nearest neighbours ``j``; weight = cosine or 1.
    """
    vals, idx = topk_cosine(x, k, loop=loop, batch_size=batch_size, precision=precision)
    return _to_edges(vals, idx, weighted)


@torch.no_grad()
def cointeraction_knn_graph(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    k: int,
    *,
    weighted: bool = True,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """User–user kNN by co-interaction counts ``c(u, v) = |I_u ∩ I_v|`` (DualGNN), self excluded.

    Computed as sparse ``R_b Rᵀ`` per block of users, so memory is
    ``O(U·k + block·U)``. Users with fewer than ``k`` co-interacting users still get
    ``k`` edges; the extra ones have count 0 (weight 0 when ``weighted``).

    Args:
        edge_index: train interactions ``[2, E]`` (user, item).
        num_users: ``U``.
        num_items: ``I``.
        k: neighbours per user.
        weighted: weight = count (default) or 1.
        batch_size: users per block.

    Returns:
        ``(edge_index [2, U·k], edge_weight [U·k])`` with edges ``v -> u``.
    """
    ones = torch.ones(edge_index.size(1))
    R = torch.sparse_coo_tensor(edge_index, ones, (num_users, num_items)).coalesce().to_sparse_csr()
    indptr, cols = R.crow_indices(), R.col_indices()

    def sim(s: int, e: int) -> Tensor:
        lo, hi = int(indptr[s]), int(indptr[e])
        rows = torch.repeat_interleave(torch.arange(e - s), indptr[s + 1 : e + 1] - indptr[s:e])
        block = torch.zeros(e - s, num_items)
        block[rows, cols[lo:hi]] = 1.0
        return torch.sparse.mm(R, block.t()).t()  # [B, U] = R_b Rᵀ

    vals, idx = _topk_blocks(sim, num_users, num_users, k, False, batch_size or _auto_block(max(num_users, num_items)))
    return _to_edges(vals, idx, weighted)


def scatter_mean_features(edge_index: Tensor, x_item: Tensor, num_users: int) -> Tensor:
    """Mean of the features of each user's items, ``[U, F]`` (zeros for users with none).

    A sparse ``D⁻¹R X`` product: no ``[E, F]`` gather is materialised.
    """
    x_item = dense_fp32(x_item)
    cnt = torch.bincount(edge_index[0], minlength=num_users).clamp_min(1).to(x_item.dtype)
    w = 1.0 / cnt[edge_index[0]]
    R = torch.sparse_coo_tensor(edge_index, w, (num_users, x_item.size(0))).coalesce().to_sparse_csr()
    with fp32_region(x_item.device.type):  # also called in training forwards (ULF), maybe under autocast
        return torch.sparse.mm(R, x_item)
