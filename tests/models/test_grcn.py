"""GRCN invariants: MMRec's homogeneous GRCN (PyG GATConv/SAGEConv semantics) as the oracle, routing, loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import softmax

from mmgraph.graph import build_graph
from mmgraph.models.grcn import GRCN
from mmgraph.typing import ITEM, IU, UI, USER, BPRBatch


class RefGAT(MessagePassing):
    """MMRec's GRCN ``GATConv`` (default flow source_to_target, softmax over edge_index[1])."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)

    def message(self, x_i, x_j, index, size_i):
        self.alpha = softmax((x_i * x_j).sum(-1), index, num_nodes=size_i)
        return x_j * self.alpha.view(-1, 1)


class RefSAGE(MessagePassing):
    """MMRec's GRCN ``SAGEConv``: x_j * weight_vector, aggr add."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x, edge_index, w):
        return self.propagate(edge_index, x=x, w=w)

    def message(self, x_j, w):
        return x_j * w


def mmrec_grcn(model: GRCN, data):
    """MMRec's GRCN.forward on its homogeneous edge_index (user, item + U), float64."""
    U = model.num_users
    ei = data[UI].edge_index.clone()
    edge_index = torch.stack([ei[0], ei[1] + U])  # pack_edge_index
    dbl = lambda t: t.detach().double()  # noqa: E731
    gat = RefGAT()
    weights, reps, user_rows_of_routing = [], [], []
    for m in model.modalities:
        lin = model.mlp[m]
        feats = F.leaky_relu(data[ITEM][f"x_{m}"].double() @ dbl(lin.weight).t() + dbl(lin.bias))
        pref, feats = F.normalize(dbl(model.preference[m])), F.normalize(feats)
        for _ in range(model.num_routing):
            x = torch.cat((pref, feats))
            x_hat = gat(x, edge_index)
            user_rows_of_routing.append(x_hat[:U])
            pref = F.normalize(pref + x_hat[:U])
        x = torch.cat((pref, feats))
        both = torch.cat((edge_index, edge_index[[1, 0]]), dim=1)
        x_hat = gat(x, both)
        reps.append(x + x_hat)
        weights.append(gat.alpha.view(-1, 1))
    weight = torch.cat(weights, dim=1)
    conf = dbl(model.confidence)
    confidence = torch.cat((conf[edge_index[0]], conf[edge_index[1]]), dim=0)
    weight = torch.relu((weight * confidence).max(dim=1).values.view(-1, 1))
    both = torch.cat((edge_index, edge_index[[1, 0]]), dim=1)
    x = F.normalize(dbl(model.id_embedding))
    sage = RefSAGE()
    h1 = sage(x, both, weight)
    h2 = sage(h1, both, weight)
    return torch.cat([x + h1 + h2, *reps], dim=1), user_rows_of_routing


def make(tiny_data, **kw):
    data, split = tiny_data
    dims = {m: int(data[ITEM][f"x_{m}"].size(1)) for m in data.modalities}
    torch.manual_seed(0)
    model = GRCN(data[USER].num_nodes, data[ITEM].num_nodes, modality_dims=dims, **kw).double()
    data = build_graph(data, model.graph_spec)
    for m in data.modalities:
        data[ITEM][f"x_{m}"] = data[ITEM][f"x_{m}"].double()
    return model, data, split


def test_forward_equals_mmrec_and_routing_is_a_no_op_there(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        out = model(data)
    ref, routing_user_rows = mmrec_grcn(model, data)
    torch.testing.assert_close(torch.cat([out["user"], out["item"]]), ref)
    assert out["user"].shape[1] == 64 + 2 * 64
    # MMRec's routing messages flow user -> item: the user rows it adds are exactly zero
    assert routing_user_rows and all(torch.equal(r, torch.zeros_like(r)) for r in routing_user_rows)


def test_edge_list_path_equals_sparse_path(tiny_data):
    model, data, _ = make(tiny_data, user_routing=True)
    edge_only = copy.copy(data)
    for et in (UI, IU):
        del edge_only[et].adj_t
    assert "adj_t" in data[UI] and "adj_t" not in edge_only[UI]
    with torch.no_grad():
        a, b = model(data), model(edge_only)
    torch.testing.assert_close(a["user"], b["user"])
    torch.testing.assert_close(a["item"], b["item"])


def test_user_routing_updates_the_preferences(tiny_data):
    model, data, _ = make(tiny_data, user_routing=True)
    with torch.no_grad():
        routed = model(data)["user"]
        model.user_routing = False
        plain = model(data)["user"]
    assert not torch.allclose(routed[:, 64:], plain[:, 64:])
    model.user_routing = True
    model.num_routing = 0
    with torch.no_grad():
        torch.testing.assert_close(model(data)["user"], plain)


def test_pruned_edges_and_confidence(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        model.confidence.fill_(-1.0)  # every affinity negative: all edges pruned, e^id = normalize(E)
        out = model(data)
    x = F.normalize(model.id_embedding.detach(), dim=1)
    torch.testing.assert_close(torch.cat([out["user"][:, :64], out["item"][:, :64]]), x)


def test_loss_equals_mmrec_formula(tiny_data):
    model, data, _ = make(tiny_data, reg_weight=0.3)
    users, pos, neg = torch.tensor([0, 3, 5, 3]), torch.tensor([1, 2, 7, 9]), torch.tensor([4, 0, 6, 8])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    U = model.num_users
    out, _ = mmrec_grcn(model, data)
    user_tensor = users.repeat_interleave(2)
    item_tensor = torch.stack((pos + U, neg + U)).t().contiguous().view(-1)
    score = (out[user_tensor] * out[item_tensor]).sum(1).view(-1, 2)
    bpr = -torch.mean(torch.log(torch.sigmoid(score @ torch.tensor([[1.0], [-1.0]], dtype=torch.float64))))
    idw = model.id_embedding.detach()
    reg_emb = (idw[user_tensor] ** 2 + idw[item_tensor] ** 2).mean() + (model.preference["image"].detach() ** 2).mean()
    reg_content = sum((model.preference[m].detach()[user_tensor] ** 2).mean() for m in ("image", "text"))
    torch.testing.assert_close(losses["bpr"], bpr)
    torch.testing.assert_close(losses["reg"], reg_emb + reg_content)
    torch.testing.assert_close(losses["loss"], bpr + 0.3 * (reg_emb + reg_content))


def test_gradients_reach_confidence_and_mlp(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"])
    model.loss(data, BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))["loss"].backward()
    assert model.confidence.grad.abs().sum() > 0 and model.mlp["text"].weight.grad.abs().sum() > 0
    assert model.visual is None  # text only: no whole-table preference term
    with pytest.raises(ValueError, match="not in the dataset"):
        GRCN(3, 3, modality_dims={"text": 4}, modalities=["image"])
