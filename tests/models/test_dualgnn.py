"""DualGNN invariants: the user graph is the co-interaction kNN with softmax weights, MMRec's padding,
MMRec's forward re-implemented densely, the loss."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from mmgraph.graph import GraphSpec, build_graph, cointeraction_knn_graph, softmax_norm
from mmgraph.models.base import build_model
from mmgraph.models.dualgnn import DualGNN, mmrec_padded_user_graph
from mmgraph.typing import ITEM, IU, UI, USER, UU, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(DualGNN, data, **kw)
    return model, data, split


def dense_counts(data) -> torch.Tensor:
    """MMRec's gen_user_matrix: c(u, v) = |I_u ∩ I_v| for u != v, 0 on the diagonal."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    R = torch.zeros(U, I, dtype=torch.float64)
    R[ei[0], ei[1]] = 1.0
    C = R @ R.t()
    C.fill_diagonal_(0.0)
    return C


def dense_user_graph(data, k: int) -> torch.Tensor:
    """MMRec's topk_sample without padding: row u = softmax of the top-k positive counts (dense [U, U])."""
    C = dense_counts(data)
    S = torch.zeros_like(C)
    for u in range(C.size(0)):
        nz = int((C[u] > 0).sum())
        if nz == 0:
            continue
        val, idx = C[u].topk(min(k, nz))
        S[u, idx] = torch.softmax(val, 0)
    return S


def toy_data(U: int, I: int, edges: list[tuple[int, int]]) -> HeteroData:
    data = HeteroData()
    data[USER].num_nodes, data[ITEM].num_nodes = U, I
    ei = torch.tensor(edges).t()
    data[UI].edge_index, data[IU].edge_index = ei, ei.flip(0)
    return data


def test_softmax_norm():
    ei = torch.tensor([[1, 2, 3, 0, 2], [0, 0, 0, 1, 1]])  # targets 0 (three edges), 1 (two edges)
    w = torch.tensor([1.0, 2.0, 0.0, 500.0, 480.0])  # a zero edge; huge counts do not overflow
    out = softmax_norm(ei, 3, w)
    e = torch.tensor([1.0, 2.0]).softmax(0)
    torch.testing.assert_close(out[:3], torch.tensor([e[0], e[1], 0.0]))
    torch.testing.assert_close(out[3:], torch.tensor([500.0, 480.0]).softmax(0))
    assert torch.isfinite(out).all()


def test_user_graph_is_the_cointeraction_knn_with_softmax_weights(tiny_data):
    model, data, _ = make(tiny_data, user_knn_k=5)
    U = data[USER].num_nodes
    C = dense_counts(data)
    e, w = data[UU].edge_index, data[UU].edge_weight
    e_ref, counts = cointeraction_knn_graph(data[UI].edge_index, U, data[ITEM].num_nodes, 5)
    assert torch.equal(e, e_ref)  # the graph utilities' co-interaction kNN, as built
    torch.testing.assert_close(counts.double(), C[e[1], e[0]])  # weights came from the true counts
    ref = dense_user_graph(data, 5)
    for u in range(U):  # the same counts and weights as MMRec's list (ties may pick other users)
        mine = e[0, (e[1] == u) & (w > 0)]
        assert sorted(C[u, mine].tolist()) == sorted(C[u][ref[u] > 0].tolist())
        torch.testing.assert_close(sorted(w[(e[1] == u) & (w > 0)].double().tolist()),
                                   sorted(ref[u][ref[u] > 0].tolist()))


def test_user_graph_exact_on_a_tie_free_example():
    # user 0 shares 3 items with user 1, 2 with user 2, 1 with user 3; user 4 shares nothing
    edges = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0), (4, 5)]
    data = build_graph(toy_data(5, 6, edges), GraphSpec(user_knn_k=2, user_knn_norm="softmax"))
    S = data[UU].adj_t.to_dense().double()
    torch.testing.assert_close(S, dense_user_graph(data, 2))
    e = torch.tensor([3.0, 2.0]).softmax(0)
    torch.testing.assert_close(S[0], torch.tensor([0.0, e[0], e[1], 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(S[4], torch.zeros(5, dtype=torch.float64))  # no co-interaction: aggregates nothing


def padded_multiplicities(data, out, u: int, k: int) -> dict[int, float]:
    e, w, w2 = data[UU].edge_index, data[UU].edge_weight, out[UU].edge_weight
    sel = (e[1] == u) & (w > 0)
    r = w2[sel] / w[sel]
    m = k * r / r.sum()  # sum of multiplicities is k
    return dict(zip(e[0, sel].tolist(), m.tolist(), strict=True))


def test_mmrec_padding_is_a_polya_urn_and_pure():
    # user 0: neighbours 1 (count 2) and 2 (count 1); users 3, 4 have none; k = 4
    edges = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 4), (4, 5)]
    data = build_graph(toy_data(5, 6, edges), GraphSpec(user_knn_k=4, user_knn_norm="softmax"))
    before = data[UU].edge_weight.clone()
    gen = torch.Generator().manual_seed(0)
    freq = Counter()
    trials = 1500
    for _ in range(trials):
        out = mmrec_padded_user_graph(data, 4, generator=gen)
        m = padded_multiplicities(data, out, 0, 4)
        assert all(abs(v - round(v)) < 1e-4 and round(v) >= 1 for v in m.values())
        freq[round(m[1])] += 1
        # weights: multiplicity x exp(count), normalised
        w_expect = torch.tensor([m[1] * math.exp(2), m[2] * math.exp(1)])
        got = out[UU].adj_t.to_dense()[0, 1:3]
        torch.testing.assert_close(got, (w_expect / w_expect.sum()).float())
    # Pólya urn from [1, 2] with 2 draws: m_1 uniform on {1, 2, 3} (uniform-with-replacement: 1/4, 1/2, 1/4)
    for v in (1, 2, 3):
        assert abs(freq[v] / trials - 1 / 3) < 0.05, freq
    assert torch.equal(data[UU].edge_weight, before)  # pure
    assert torch.equal(out[UU].adj_t.to_dense()[3], torch.zeros(5))  # no neighbours: still nothing


def test_padding_leaves_full_lists_unchanged(tiny_data):
    model, data, _ = make(tiny_data, user_knn_k=3)
    n = torch.bincount(data[UU].edge_index[1][data[UU].edge_weight > 0], minlength=data[USER].num_nodes)
    out = model.train_graph(data, 0)
    full = n[data[UU].edge_index[1]] == 3
    torch.testing.assert_close(out[UU].edge_weight[full], data[UU].edge_weight[full])
    assert model.train_graph(data, 0) is not data
    model.mmrec_padding = False
    assert model.train_graph(data, 0) is data


def dense_dualgnn(model: DualGNN, data, S: torch.Tensor):
    """MMRec's DualGNN.forward with dense matrices (Base_gcn sym-norm add, in-place sum, user graph S)."""
    U, I = model.num_users, model.num_items
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    A = d.view(-1, 1) * A * d.view(1, -1)
    dbl = lambda t: t.detach().double()  # noqa: E731

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    reps = []
    for m in model.modalities:
        temp = lin(model.mlp_1[m], F.leaky_relu(lin(model.mlp[m], data[ITEM][f"x_{m}"].double())))
        x = F.normalize(torch.cat([dbl(model.preference[m]), temp]))
        h = A @ x
        reps.append(h + x + A @ h)
    representation = reps[0]
    for r in reps[1:]:
        representation += r  # in place: reps[0] is modified too (MMRec)
    v = torch.stack([r[:U] for r in reps], dim=2)  # [U, d, K]
    user = (v @ dbl(model.weight_u).unsqueeze(2)).squeeze(2)
    user = user + S @ user
    return user, representation[U:]


def test_forward_equals_dense_mmrec(tiny_data):
    model, data, _ = make(tiny_data, user_knn_k=5)
    with torch.no_grad():
        out = model(data)
    user, item = dense_dualgnn(model, data, data[UU].adj_t.to_dense().double())
    torch.testing.assert_close(out["user"].double(), user, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["item"].double(), item, atol=1e-5, rtol=1e-4)


def test_without_the_inplace_quirk_users_get_the_weighted_sum(tiny_data):
    model, data, _ = make(tiny_data, mmrec_inplace_sum=False, mmrec_padding=False)
    with torch.no_grad():
        model.weight_u.copy_(torch.tensor([1.0, 0.0]))
        z_image, item = model._representations(data)  # intended: w_image * x_image
        model.weight_u.copy_(torch.tensor([0.0, 1.0]))
        z_text, _ = model._representations(data)
        model.mmrec_inplace_sum = True
        model.weight_u.copy_(torch.tensor([1.0, 0.0]))
        z_quirk, item_quirk = model._representations(data)
    # MMRec: the image slot carries the in-place item sum x_image + x_text
    torch.testing.assert_close(z_quirk, z_image + z_text)
    torch.testing.assert_close(item_quirk, item)
    model.modalities = ["image"]  # one modality: the representation itself, no fusion weights
    model.weight_u.data = model.weight_u.data[:, :1]
    assert model._representations(data)[0].shape == (model.num_users, 64)


def test_loss_equals_mmrec_formula(tiny_data):
    model, data, _ = make(tiny_data, reg_weight=0.2, mmrec_padding=False)
    users, pos, neg = torch.tensor([0, 3, 5, 3]), torch.tensor([1, 2, 7, 9]), torch.tensor([4, 0, 6, 8])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    user, item = dense_dualgnn(model, data, data[UU].adj_t.to_dense().double())
    ps = (user[users] * item[pos]).sum(1)
    ns = (user[users] * item[neg]).sum(1)
    bpr = -torch.mean(torch.log2(torch.sigmoid(ps - ns)))
    reg = sum((model.preference[m].detach().double()[users] ** 2).mean() for m in ("image", "text"))
    reg = reg + (model.weight_u.detach().double() ** 2).mean() + (model.weight_i.detach().double() ** 2).mean()
    torch.testing.assert_close(losses["bpr"].double(), bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), reg, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), bpr + 0.2 * reg, atol=1e-6, rtol=1e-5)


def test_init_and_arguments(tiny_data):
    model, _, _ = make(tiny_data)
    torch.testing.assert_close(model.weight_u.detach().sum(1), torch.ones(model.num_users))
    assert model.graph_spec.user_knn_k == 40 and model.graph_spec.user_knn_norm == "softmax"
    assert UU in model.required_edge_types
    with pytest.raises(ValueError, match="user_knn_norm='softmax'"):
        DualGNN(3, 3, modality_dims={"text": 4}, graph=GraphSpec(user_knn_k=40))
