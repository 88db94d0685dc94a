"""COHESION against the authors' forward and loss (src/models/cohesion.py) re-implemented densely in float64.

The oracle follows the reference code line by line: ``get_norm_adj_mat``, ``get_knn_adj_mat`` /
``compute_normalized_laplacian``, the preprocessing script's user–user counts and ``topk_sample``,
``GCNLayer.forward``, ``build_representation``, ``process_user_item_representation``,
``User_Graph_sample``, ``adaptive_optimization`` and ``calculate_loss`` (the reference's image
slot = ``image``, text slot = ``text`` on the tiny dataset).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import GraphSpec
from mmgraph.models.base import build_model
from mmgraph.models.cohesion import COHESION
from mmgraph.models.dualgnn import mmrec_padded_user_graph
from mmgraph.models.freedom import degree_sensitive_prune
from mmgraph.typing import II, ITEM, UI, UU, BPRBatch

USERS = torch.tensor([0, 3, 5, 3, 17, 42, 59, 8])
POS = torch.tensor([1, 2, 7, 9, 11, 30, 39, 0])
NEG = torch.tensor([4, 0, 6, 8, 25, 12, 3, 21])


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(COHESION, data, **kw)
    return model, data, split


# ----------------------------------------------------------------- the reference's graphs, dense
def ref_norm_adj(train: torch.Tensor, U: int, I: int) -> torch.Tensor:
    """get_norm_adj_mat: A on the U + I nodes, D^-1/2 A D^-1/2 with (A > 0) row sums + 1e-7."""
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[train[0], train[1] + U] = 1.0
    A[train[1] + U, train[0]] = 1.0
    diag = (A > 0).sum(1).double() + 1e-7
    diag = diag.pow(-0.5)
    return diag.view(-1, 1) * A * diag.view(1, -1)


def ref_mm_adj(feats: dict[str, torch.Tensor], k: int, mm_image_weight: float) -> torch.Tensor:
    """get_knn_adj_mat + compute_normalized_laplacian per slot, then w * image + (1 - w) * text."""
    adjs = {}
    for m, x in feats.items():
        x = x.double()
        context_norm = x.div(torch.norm(x, p=2, dim=-1, keepdim=True))
        sim = torch.mm(context_norm, context_norm.transpose(1, 0))
        _, knn_ind = torch.topk(sim, k, dim=-1)
        adj = torch.zeros_like(sim)
        adj.scatter_(1, knn_ind, 1.0)
        r_inv_sqrt = (1e-7 + adj.sum(-1)).pow(-0.5)
        adjs[m] = r_inv_sqrt.view(-1, 1) * adj * r_inv_sqrt.view(1, -1)
    return mm_image_weight * adjs["image"] + (1.0 - mm_image_weight) * adjs["text"]


def ref_user_counts(train: torch.Tensor, U: int, I: int) -> torch.Tensor:
    """gen_user_matrix: |I_u ∩ I_v| for u != v (dense U x U)."""
    R = torch.zeros(U, I, dtype=torch.float64)
    R[train[0], train[1]] = 1.0
    C = R @ R.t()
    C.fill_diagonal_(0.0)
    return C


def ref_user_graph_dict(C: torch.Tensor) -> dict[int, list[list]]:
    """The preprocessing script: each user's top-min(#nonzero, 200) users by count."""
    out = {}
    for i in range(C.size(0)):
        n = int((C[i] != 0).sum())
        top = torch.topk(C[i], min(n, 200))
        out[i] = [top.indices.tolist(), top.values.tolist()]
    return out


def ref_topk_sample(user_graph_dict: dict[int, list[list]], k: int) -> tuple[list[list[int]], torch.Tensor]:
    """topk_sample for lists of length 0 or >= k (shorter ones are padded at random there)."""
    user_graph_index = []
    user_weight_matrix = torch.zeros(len(user_graph_dict), k, dtype=torch.float64)
    for i in range(len(user_graph_dict)):
        if len(user_graph_dict[i][0]) < k:
            assert len(user_graph_dict[i][0]) == 0, "the oracle does not draw the reference's random padding"
            user_graph_index.append([0] * k)
            continue
        user_graph_index.append(user_graph_dict[i][0][:k])
        user_weight_matrix[i] = F.softmax(torch.tensor(user_graph_dict[i][1][:k], dtype=torch.float64), dim=0)
    return user_graph_index, user_weight_matrix


def ours_as_dict(data, C: torch.Tensor) -> dict[int, list[list]]:
    """The data layer's neighbour choice in the preprocessing script's format (counts from the dense C).

    Ties at the k-th count may select other users than the reference's topk (the counts, hence the
    weights, are the same: test_user_graph_is_the_reference_topk_up_to_ties); the oracle aggregates
    over our choice so that the forward comparison is exact."""
    ei, w = data[UU].edge_index, data[UU].edge_weight
    out = {}
    for u in range(C.size(0)):
        nb = ei[0, (ei[1] == u) & (w > 0)].tolist()
        out[u] = [nb, [float(C[u, v]) for v in nb]]
    return out


# ----------------------------------------------------------------- the reference's model, dense
def ref_params(model: COHESION) -> dict[str, torch.Tensor]:
    """Float64 leaf copies of the model's parameters under the reference's names."""
    P = {"id_feat": model.id_feat, "weight_u": model.weight_u.unsqueeze(-1),  # weight_u: (U, 2, 1)
         "id_gcn.preference": model.id_preference,
         "id_gcn.MLP.weight": model.id_mlp.weight, "id_gcn.MLP.bias": model.id_mlp.bias,
         "id_gcn.MLP_1.weight": model.id_mlp_1.weight, "id_gcn.MLP_1.bias": model.id_mlp_1.bias}
    for slot, m in (("v_gcn", "image"), ("t_gcn", "text")):
        P[f"{slot}.preference"] = model.preference[m]
        P[f"{slot}.MLP.weight"], P[f"{slot}.MLP.bias"] = model.mlp[m].weight, model.mlp[m].bias
        P[f"{slot}.MLP_1.weight"], P[f"{slot}.MLP_1.bias"] = model.mlp_1[m].weight, model.mlp_1[m].bias
    return {k: v.detach().double().clone().requires_grad_() for k, v in P.items()}


def ref_gcn_layer(P, name, features, id_embd, adj, num_layer):
    """GCNLayer.forward."""
    temp_features = F.linear(F.leaky_relu(F.linear(features, P[f"{name}.MLP.weight"], P[f"{name}.MLP.bias"])),
                             P[f"{name}.MLP_1.weight"], P[f"{name}.MLP_1.bias"])
    temp_features = torch.abs(
        ((torch.mul(id_embd, id_embd) + torch.mul(temp_features, temp_features)) / 2) + 1e-8).sqrt()
    x = torch.cat((P[f"{name}.preference"], temp_features), dim=0)
    x = F.normalize(x)
    ego_embeddings = x
    all_embeddings = ego_embeddings
    embeddings_layers = [all_embeddings]
    for _ in range(num_layer):
        all_embeddings = torch.mm(adj, all_embeddings)
        _weights = F.cosine_similarity(all_embeddings, ego_embeddings, dim=-1)
        all_embeddings = torch.einsum("a,ab->ab", _weights, all_embeddings)
        embeddings_layers.append(all_embeddings)
    ui_all_embeddings = torch.sum(torch.stack(embeddings_layers, dim=0), dim=0)
    return ui_all_embeddings, P[f"{name}.preference"]


class RefCOHESION:
    """The reference's COHESION forward / calculate_loss / full_sort_predict, dense, float64."""

    def __init__(self, model: COHESION, data, *, user_knn_k: int, num_layer: int, n_mm_layers: int,
                 knn_k: int = 10, mm_image_weight: float = 0.1, reg_weight: float = 0.1) -> None:
        U, I = model.num_users, model.num_items
        train = data[UI].edge_index
        self.n_users, self.dim_latent = U, 64
        self.num_layer, self.n_layers, self.reg_weight = num_layer, n_mm_layers, reg_weight
        self.P = ref_params(model)
        self.v_feat, self.t_feat = data[ITEM].x_image.double(), data[ITEM].x_text.double()
        self.masked_adj = ref_norm_adj(train, U, I)
        self.mm_adj = ref_mm_adj({"image": data[ITEM].x_image, "text": data[ITEM].x_text}, knn_k, mm_image_weight)
        C = ref_user_counts(train, U, I)
        index, weights = ref_topk_sample(ours_as_dict(data, C), user_knn_k)
        self.epoch_user_graph, self.user_weight_matrix = torch.tensor(index), weights

    def build_representation(self):
        P = self.P
        id_rep, _ = ref_gcn_layer(P, "id_gcn", P["id_feat"], P["id_feat"], self.masked_adj, self.num_layer)
        id_rep_data = id_rep.data
        self.v_rep, self.v_preference = ref_gcn_layer(P, "v_gcn", self.v_feat, P["id_feat"], self.masked_adj,
                                                      self.num_layer)
        self.t_rep, self.t_preference = ref_gcn_layer(P, "t_gcn", self.t_feat, P["id_feat"], self.masked_adj,
                                                      self.num_layer)
        representation = torch.cat((id_rep_data, self.v_rep, self.t_rep), dim=1)
        self.v_rep = torch.unsqueeze(self.v_rep, 2)
        self.t_rep = torch.unsqueeze(self.t_rep, 2)
        id_rep_data = torch.unsqueeze(id_rep_data, 2)
        return representation, id_rep_data

    def process_user_item_representation(self, representation, id_rep_data):
        U = self.n_users
        user_rep = torch.cat((id_rep_data[:U], self.v_rep[:U], self.t_rep[:U]), dim=2)
        user_rep = torch.cat((user_rep[:, :, 0], user_rep[:, :, 1], user_rep[:, :, 2]), dim=1)
        item_rep = representation[U:]
        h_i = item_rep
        for _ in range(self.n_layers):
            h_i = torch.mm(self.mm_adj, h_i)
        u_features = user_rep[self.epoch_user_graph]  # User_Graph_sample
        h_u = torch.matmul(self.user_weight_matrix.unsqueeze(1), u_features).squeeze()
        return user_rep + h_u, item_rep + h_i

    def result_embed(self):
        return torch.cat(self.process_user_item_representation(*self.build_representation()), dim=0)

    def adaptive_optimization(self, user_e, pos_e, neg_e):
        pos_score_ = torch.mul(user_e, pos_e).view(-1, 3, self.dim_latent).sum(dim=-1)
        neg_score_ = torch.mul(user_e, neg_e).view(-1, 3, self.dim_latent).sum(dim=-1)
        modality_indicator = 1 - (pos_score_ - neg_score_).softmax(-1).detach()
        adaptive_weight = torch.tile(modality_indicator.view(-1, 3, 1), [1, 1, self.dim_latent])
        return adaptive_weight.view(-1, 3 * self.dim_latent)

    def calculate_loss(self, user, pos_item, neg_item):
        result_embed = self.result_embed()
        user_tensor = result_embed[user]
        pos_item_tensor = result_embed[pos_item + self.n_users]
        neg_item_tensor = result_embed[neg_item + self.n_users]
        adaptive_weight = self.adaptive_optimization(user_tensor, pos_item_tensor, neg_item_tensor)
        pos_scores = torch.sum(user_tensor * pos_item_tensor * adaptive_weight, dim=1)
        neg_scores = torch.sum(user_tensor * neg_item_tensor * adaptive_weight, dim=1)
        loss_value = -torch.mean(torch.log2(torch.sigmoid(pos_scores - neg_scores)))
        reg = (self.v_preference[user] ** 2).mean() + (self.t_preference[user] ** 2).mean()
        reg_loss = self.reg_weight * reg
        reg_loss = reg_loss + self.reg_weight * (self.P["weight_u"] ** 2).mean()
        return loss_value + reg_loss, loss_value, reg + (self.P["weight_u"] ** 2).mean()


# ----------------------------------------------------------------- tests
def test_item_graph_is_the_reference_mm_adj(tiny_data):
    _, data, _ = make(tiny_data, item_knn_k=4)
    feats = {m: data[ITEM][f"x_{m}"] for m in ("image", "text")}
    torch.testing.assert_close(data[II].adj_t.to_dense().double(), ref_mm_adj(feats, 4, 0.1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [10, 40])
def test_user_graph_is_the_reference_topk_up_to_ties(tiny_data, k):
    model, data, _ = make(tiny_data, user_knn_k=k)
    U, I = model.num_users, model.num_items
    C = ref_user_counts(data[UI].edge_index, U, I)
    ref = ref_user_graph_dict(C)
    ours = ours_as_dict(data, C)
    S = data[UU].adj_t.to_dense().double()  # S[u, v]
    for u in range(U):
        ref_counts = sorted(ref[u][1][:k])
        assert sorted(ours[u][1]) == ref_counts, u  # the same counts: a top-k of the row
        nb = torch.tensor(ours[u][0])
        torch.testing.assert_close(S[u, nb], F.softmax(C[u, nb], dim=0), atol=1e-6, rtol=1e-5)  # unpadded softmax of the counts
        assert S[u].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(("num_layers", "num_ii_layers"), [(1, 1), (2, 0), (3, 2)])
def test_forward_equals_dense_reference(tiny_data, num_layers, num_ii_layers):
    model, data, _ = make(tiny_data, user_knn_k=10, num_layers=num_layers, num_ii_layers=num_ii_layers)
    with torch.no_grad():
        out = model(data)
    ref = RefCOHESION(model, data, user_knn_k=10, num_layer=num_layers, n_mm_layers=num_ii_layers)
    embed = ref.result_embed().detach()
    U = model.num_users
    assert out["user"].shape == (U, 192) and out["item"].shape == (model.num_items, 192)
    torch.testing.assert_close(out["user"].double(), embed[:U], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["item"].double(), embed[U:], atol=1e-5, rtol=1e-4)
    # full_sort_predict: plain dot products of result_embed (no adaptive weights)
    scores = model.score(out["user"][USERS], out["item"]).double()
    torch.testing.assert_close(scores, embed[:U][USERS] @ embed[U:].t(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_loss_and_gradients_equal_dense_reference(tiny_data, num_layers):
    model, data, _ = make(tiny_data, user_knn_k=10, num_layers=num_layers, reg_weight=0.2, mmrec_padding=False)
    ref = RefCOHESION(model, data, user_knn_k=10, num_layer=num_layers, n_mm_layers=1, reg_weight=0.2)
    losses = model.loss(data, BPRBatch(USERS, POS, NEG))
    loss, bpr, reg = ref.calculate_loss(USERS, POS, NEG)
    torch.testing.assert_close(losses["bpr"].double(), bpr.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), reg.detach(), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), loss.detach(), atol=1e-6, rtol=1e-5)
    # the adaptive weights matter here: plain BPR on the same embeddings is a different number
    emb = ref.result_embed().detach()
    U = model.num_users
    plain = -torch.log2(torch.sigmoid((emb[USERS] * (emb[U + POS] - emb[U + NEG])).sum(1))).mean()
    assert abs(float(plain) - float(bpr.detach())) > 1e-3

    losses["loss"].backward()
    loss.backward()
    P = ref.P
    ours = {"id_feat": model.id_feat, "weight_u": model.weight_u}
    for slot, m in (("v_gcn", "image"), ("t_gcn", "text")):
        ours[f"{slot}.preference"] = model.preference[m]
        ours[f"{slot}.MLP.weight"], ours[f"{slot}.MLP.bias"] = model.mlp[m].weight, model.mlp[m].bias
        ours[f"{slot}.MLP_1.weight"], ours[f"{slot}.MLP_1.bias"] = model.mlp_1[m].weight, model.mlp_1[m].bias
    for name, p in ours.items():
        g_ref = P[name].grad.view_as(p)
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(p.grad.double(), g_ref, atol=1e-6, rtol=1e-4, msg=name)
    # the reference's `id_rep.data`: no gradient ever reaches the ID branch's own parameters
    for name in ("id_gcn.preference", "id_gcn.MLP.weight", "id_gcn.MLP.bias", "id_gcn.MLP_1.weight"):
        assert P[name].grad is None, name
    frozen = [model.id_preference, *model.id_mlp.parameters(), *model.id_mlp_1.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "id_preference", "id_mlp.weight", "id_mlp.bias", "id_mlp_1.weight", "id_mlp_1.bias"}


def test_undetached_id_branch_same_values_and_trained(tiny_data):
    a, data, _ = make(tiny_data, user_knn_k=10)
    b, _, _ = make(tiny_data, user_knn_k=10, mmrec_detach_id=False)
    b.load_state_dict(a.state_dict())
    batch = BPRBatch(USERS, POS, NEG)
    la, lb = a.loss(data, batch), b.loss(data, batch)
    torch.testing.assert_close(la["loss"], lb["loss"])
    lb["loss"].backward()
    assert b.id_preference.grad is not None and b.id_preference.grad.abs().sum() > 0
    assert b.id_mlp.weight.grad.abs().sum() > 0


def test_one_modality_keeps_the_id_block(tiny_data):
    two, data, _ = make(tiny_data, user_knn_k=10)
    one, _, _ = make(tiny_data, user_knn_k=10, modalities=["text"])
    with torch.no_grad():
        for name in ("id_feat", "id_preference"):
            getattr(one, name).copy_(getattr(two, name))
        one.id_mlp.load_state_dict(two.id_mlp.state_dict())
        one.id_mlp_1.load_state_dict(two.id_mlp_1.state_dict())
        one.mlp_1["text"].load_state_dict(two.mlp_1["text"].state_dict())
        one.mlp["text"].load_state_dict(two.mlp["text"].state_dict())
        one.preference["text"].copy_(two.preference["text"])
        o1, o2 = one(data), two(data)
    assert o1["user"].shape == (one.num_users, 128) and one.weight_u.shape == (one.num_users, 1)
    for t in ("user", "item"):
        torch.testing.assert_close(o1[t][:, :64], o2[t][:, :64])  # [id | text] vs [id | image | text]
        torch.testing.assert_close(o1[t][:, 64:], o2[t][:, 128:])


def test_train_graph_prunes_and_pads(tiny_data):
    model, data, _ = make(tiny_data, user_knn_k=40, edge_dropout=0.3)
    ui_before, uu_before = data[UI].edge_index.clone(), data[UU].edge_weight.clone()
    torch.manual_seed(7)
    out = model.train_graph(data, 0)
    torch.manual_seed(7)
    ref = mmrec_padded_user_graph(degree_sensitive_prune(data, 0.7), 40)
    assert out[UI].edge_index.size(1) == int(0.7 * data[UI].edge_index.size(1))
    for et in (UI, UU):
        assert torch.equal(out[et].edge_index, ref[et].edge_index)
        torch.testing.assert_close(out[et].edge_weight, ref[et].edge_weight)
    assert not torch.equal(out[UU].edge_weight, data[UU].edge_weight)  # some users have < 40 neighbours
    assert torch.equal(data[UI].edge_index, ui_before) and torch.equal(data[UU].edge_weight, uu_before)
    model.edge_dropout, model.mmrec_padding = 0.0, False
    assert model.train_graph(data, 0) is data


def test_arguments_and_init(tiny_data):
    model, _, _ = make(tiny_data)
    torch.testing.assert_close(model.weight_u.detach().sum(1), torch.ones(model.num_users))
    assert model.modalities == ["image", "text"]
    std = model.id_feat.detach().std().item()
    assert std == pytest.approx(math.sqrt(2.0 / (model.num_items + 64)), rel=0.15)  # Xavier-normal
    spec = model.graph_spec
    assert (spec.item_knn_k, spec.user_knn_k, spec.user_knn_norm, spec.reference_image_weight) == (10, 40, "softmax", 0.1)
    assert "mmrec_detach_id=True" in repr(model) and "LayerRefinedConv(groups=3" in repr(model)
    with pytest.raises(ValueError, match="COHESION needs"):
        COHESION(3, 3, modality_dims={"text": 4}, graph=GraphSpec(user_knn_k=40))
    with pytest.raises(ValueError, match=">= 0"):
        COHESION(3, 3, modality_dims={"text": 4}, num_layers=-1)
    with pytest.raises(ValueError, match="edge_dropout"):
        COHESION(3, 3, modality_dims={"text": 4}, edge_dropout=1.0)
    with pytest.raises(ValueError, match="not in the dataset"):
        COHESION(3, 3, modality_dims={"text": 4}, modalities=["image"])
