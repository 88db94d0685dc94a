"""ULF invariants: user features from training items only, the user graph against a dense
reference, gradient flow to W_u / b_u, the LATTICE special case, modality ablations, sweep keys."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch_geometric.data import HeteroData

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.graph import GraphSpec, build_graph
from mmgraph.models import LATTICE
from mmgraph.models.base import check_requirements
from mmgraph.models.ulf import ULF
from mmgraph.training.run import _model_kwargs
from mmgraph.typing import ITEM, IU, UI, USER, UU, item_knn_type


def setup(cfg_tiny, *overrides):
    cfg = cfg_tiny("model=ulf", *overrides)
    data, split = instantiate(cfg.dataset, _convert_="all")
    torch.manual_seed(0)
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = build_graph(data, model.graph_spec, cache_dir=cfg.cache_dir)
    check_requirements(model, data)
    model.init_from_data(data)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return model, data, split, type(batch)(*(t[:64] for t in batch))


def to_dense(ei: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, n, dtype=w.dtype).index_put((ei[1], ei[0]), w, accumulate=True)  # A[i, j]: j -> i


def dense_knn(e: torch.Tensor, k: int) -> torch.Tensor:
    """Kept cosine values of each row's top-k (self included), negatives clamped to 0, dense."""
    en = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = en @ en.t()
    vals, idx = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter_(1, idx, vals.clamp_min(0.0))


def dense_norm(a: torch.Tensor) -> torch.Tensor:
    d = a.sum(1).pow(-0.5)
    d = torch.where(torch.isinf(d), torch.zeros_like(d), d)
    return d[:, None] * a * d[None, :]


def small_data(num_users=12, num_items=9, dim=5, seed=0, cold_user=False, dtype=torch.float64) -> HeteroData:
    """Users with 2-4 distinct items each (user 0 has none when ``cold_user``)."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = [], []
    for u in range(1 if cold_user else 0, num_users):
        items = torch.randperm(num_items, generator=g)[: 2 + u % 3]
        rows += [u] * len(items)
        cols += items.tolist()
    data = HeteroData()
    data[USER].num_nodes = num_users
    data[ITEM].num_nodes = num_items
    data[ITEM].x_text = torch.randn(num_items, dim, generator=g, dtype=dtype)
    data[UI].edge_index = torch.tensor([rows, cols])
    data[IU].edge_index = data[UI].edge_index.flip(0)
    return data


def test_user_features_are_the_mean_of_training_items_only(cfg_tiny):
    model, data, split, _ = setup(cfg_tiny, "model.modalities=[text]")
    assert model.user_modality == "text"
    feats, has_items = model.user_features(data)
    x = data[ITEM].x_text
    expect = torch.zeros(split.num_users, x.size(1))
    seen_other = 0
    for u in range(split.num_users):
        train_items = split.train[1][split.train[0] == u]
        if len(train_items):
            expect[u] = x[train_items].mean(0)
        held_out = torch.cat([s[1][s[0] == u] for s in (split.valid, split.test)])
        seen_other += int(len(held_out) > 0 and not torch.allclose(
            x[torch.cat([train_items, held_out])].mean(0), expect[u]))
        assert bool(has_items[u]) == (len(train_items) > 0)
    torch.testing.assert_close(feats, expect)
    assert seen_other > 0  # including the valid/test items would have changed the features


@pytest.mark.parametrize("order", ["paper", "lattice_code"])
def test_user_graph_equals_dense_reference(order):
    data = small_data()
    U, K, BETA = 12, 4, 0.7
    torch.manual_seed(0)
    model = ULF(U, 9, modality_dims={"text": 5}, k_item=3, k_user=K, beta=BETA, ulf_norm_order=order,
                user_feat_embed_dim=4).double()
    data = build_graph(data, model.graph_spec)
    assert data[UU].edge_index.size(1) == U * K
    ei, w = model.user_graph(data)
    # dense reference: eq. 1, eqs. 2-5 on raw and transformed features, eq. 7, eq. 8
    e_u = torch.zeros(U, 5, dtype=torch.float64).index_add_(0, data[UI].edge_index[0],
                                                            data[ITEM].x_text[data[UI].edge_index[1]])
    e_u = e_u / torch.bincount(data[UI].edge_index[0], minlength=U).clamp_min(1)[:, None]
    S = dense_knn(e_u, K)
    S_learned = dense_knn(model.user_latent.transforms["text"](e_u), K)
    if order == "paper":
        expect = dense_norm(BETA * S + (1 - BETA) * S_learned)
    else:
        expect = BETA * dense_norm(S) + (1 - BETA) * dense_norm(S_learned)
    got = to_dense(ei, w, U)
    torch.testing.assert_close(got, expect)
    # and the gradient w.r.t. W_u, b_u is that of the dense computation
    coef = torch.randn(U, U, dtype=torch.float64)
    gw = torch.autograd.grad((got * coef).sum(), list(model.user_latent.transforms["text"].parameters()))
    ge = torch.autograd.grad((expect * coef).sum(), list(model.user_latent.transforms["text"].parameters()))
    for a, b in zip(gw, ge, strict=True):
        torch.testing.assert_close(a, b)


def test_user_without_training_items_has_no_user_graph_edges():
    data = small_data(cold_user=True, dtype=torch.float32)
    torch.manual_seed(0)
    model = ULF(12, 9, modality_dims={"text": 5}, k_item=3, k_user=4)
    data = build_graph(data, model.graph_spec)
    feats, has_items = model.user_features(data)
    assert not has_items[0] and has_items[1:].all() and feats[0].abs().sum() == 0
    A = to_dense(*model.user_graph(data), 12)
    assert A[0].abs().sum() == 0 and A[:, 0].abs().sum() == 0
    out = model.eval()(data)
    assert torch.isfinite(out["user"]).all()


def test_gradients_reach_user_and_item_transforms(cfg_tiny):
    model, data, _, batch = setup(cfg_tiny)
    assert model.modalities == ["image", "text"] and model.user_modality == "text"
    graph = model.train_graph(data, 0)
    for step in range(2):
        model.zero_grad(set_to_none=True)
        model.loss(graph, batch)["loss"].backward()
        grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}
        learned = ("user_latent.transforms.text.weight", "user_latent.transforms.text.bias",
                   "item_latent.transforms.image.weight", "item_latent.transforms.text.bias",
                   "item_latent.modality_logits")
        for name in learned:  # per_epoch rebuild: only the first batch of the epoch learns the graphs
            assert grads[name] == (step == 0), (step, name)
        assert grads["backbone.user_emb.weight"] and grads["backbone.item_emb.weight"]
    assert graph.latent_graphs.builds == 2  # the item graph and the user graph, once each
    assert "user_latent.modality_logits" not in dict(model.named_parameters()) or \
        not model.user_latent.modality_logits.requires_grad


def test_cached_graphs_equal_a_fresh_build(cfg_tiny):
    model, data, _, _ = setup(cfg_tiny, "model.dropout=0")
    graph = model.train_graph(data, 0)
    first = model(graph)
    again = model(graph)  # both graphs from the epoch cache (detached sparse copies)
    with torch.no_grad():
        fresh = model(data)
    for key in ("user", "item"):
        torch.testing.assert_close(again[key], first[key].detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fresh[key], first[key].detach(), atol=1e-6, rtol=1e-5)


def test_user_graph_off_in_lattice_code_order_is_lattice(cfg_tiny):
    """Without the user graph, in LATTICE's order and without ULF's extra choices, ULF is LATTICE."""
    model, data, split, _ = setup(cfg_tiny, "model.ulf_combine=user_graph_off", "model.ulf_norm_order=lattice_code",
                                  "model.clamp_negative=false", "model.dropout=0", "model.k_item=5",
                                  "model.lam=0.9")
    assert UU not in model.required_edge_types and not hasattr(model, "user_latent")
    lattice = LATTICE(split.num_users, split.num_items, modality_dims={"image": 8, "text": 6}, knn_k=5,
                      lambda_coeff=0.9, train_raw_features=False)
    lattice.backbone.load_state_dict(model.backbone.state_dict())
    lattice.latent.load_state_dict(model.item_latent.state_dict())
    lat_data = build_graph(data, lattice.graph_spec)
    model.eval(), lattice.eval()
    with torch.no_grad():
        a, b = model(data), lattice(lat_data)
    torch.testing.assert_close(a["item"], b["item"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["user"], b["user"])


@pytest.mark.parametrize(("mods", "user_mod"), [(["text"], "text"), (["image"], "image"), (None, "text")])
def test_modality_ablations(cfg_tiny, mods, user_mod):
    overrides = [] if mods is None else [f"model.modalities=[{','.join(mods)}]"]
    model, data, split, batch = setup(cfg_tiny, *overrides)
    assert model.user_modality == user_mod
    assert model.graph_spec.user_knn_source == user_mod
    used = mods or ["image", "text"]
    assert set(model.required_modalities) == set(used)
    assert set(model.required_edge_types) == {UI, IU, UU, *(item_knn_type(m) for m in used)}
    assert model.item_latent.modalities == used
    model.loss(model.train_graph(data, 0), batch)["loss"].backward()


def test_sweep_keys_reach_the_graph_spec(cfg_tiny):
    model, data, _, _ = setup(cfg_tiny, "model.k_item=7", "model.k_user=9", "model.lam=0.2", "model.beta=0.3")
    spec = model.graph_spec
    assert (spec.item_knn_k, spec.user_knn_k, spec.user_knn_loop) == (7, 9, True)
    assert (model.item_latent.k, model.user_latent.k) == (7, 9)
    assert (model.item_latent.lambda_coeff, model.user_latent.lambda_coeff) == (0.2, 0.3)
    assert data[UU].edge_index.size(1) == 9 * data[USER].num_nodes


def test_invalid_options():
    with pytest.raises(ValueError, match="graph_rebuild"):
        ULF(5, 5, modality_dims={"text": 3}, graph_rebuild="epoch")
    with pytest.raises(ValueError, match="not in the dataset"):
        ULF(5, 5, modality_dims={"text": 3}, modalities=["image"])
    with pytest.raises(ValueError, match="normalises its graphs"):
        ULF(5, 5, modality_dims={"text": 3}, graph=GraphSpec(item_knn_k=2, user_knn_k=2, user_knn_source="text"))


@pytest.mark.parametrize("rebuild", ["per_batch", "never"])
def test_other_rebuild_schedules(cfg_tiny, rebuild):
    model, data, _, batch = setup(cfg_tiny, f"model.graph_rebuild={rebuild}")
    graph = model.train_graph(data, 0)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        model.loss(graph, batch)["loss"].backward()
        w = model.user_latent.transforms["text"].weight.grad
        assert (w is not None and bool(w.abs().sum() > 0)) == (rebuild == "per_batch")
        assert model.item_latent.modality_logits.grad.abs().sum() > 0  # α always weighs the graphs


@pytest.mark.parametrize("order", ["paper", "lattice_code"])
def test_item_graph_equals_dense_reference(order):
    """Two modalities with unequal α: eqs. 7 → 8 → 10 ('paper') or LATTICE's order."""
    data = small_data(num_items=11)
    data[ITEM].x_image = torch.randn(11, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    I, K, LAM = 11, 3, 0.6
    torch.manual_seed(0)
    model = ULF(12, I, modality_dims={"text": 5, "image": 4}, k_item=K, k_user=4, lam=LAM,
                ulf_norm_order=order, feat_embed_dim=3).double()
    with torch.no_grad():
        model.item_latent.modality_logits.copy_(torch.tensor([0.2, 1.1]))
    data = build_graph(data, model.graph_spec)
    got = to_dense(*model.item_graph(data), I)
    alpha = torch.softmax(model.item_latent.modality_logits, 0)
    S = {m: dense_knn(data[ITEM][f"x_{m}"], K) for m in ("text", "image")}
    L = {m: dense_knn(model.item_latent.transforms[m](data[ITEM][f"x_{m}"]), K) for m in ("text", "image")}
    if order == "paper":
        expect = sum(a * dense_norm(LAM * S[m] + (1 - LAM) * L[m]) for a, m in zip(alpha, ("text", "image")))
    else:
        expect = ((1 - LAM) * dense_norm(sum(a * L[m] for a, m in zip(alpha, ("text", "image"))))
                  + LAM * sum(a * dense_norm(S[m]) for a, m in zip(alpha, ("text", "image"))))
    torch.testing.assert_close(got, expect)
    coef = torch.randn(I, I, dtype=torch.float64)
    params = [model.item_latent.modality_logits, *model.item_latent.transforms.parameters()]
    for a, b in zip(torch.autograd.grad((got * coef).sum(), params),
                    torch.autograd.grad((expect * coef).sum(), params), strict=True):
        torch.testing.assert_close(a, b)
