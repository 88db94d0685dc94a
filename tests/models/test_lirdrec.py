"""LIRDRec invariants: no item IDs, DCT input, dense oracle, PWC over epochs, ablations, configs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from hydra.utils import instantiate

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.graph import GraphSpec
from mmgraph.models.base import prepare_data
from mmgraph.models.lirdrec import LIRDRec
from mmgraph.nn.pwc import pwc_weights
from mmgraph.training.run import _model_kwargs
from mmgraph.typing import II, ITEM, IU, UI, USER

SPEC = GraphSpec(item_knn_k=5, item_knn_weighted=False, item_knn_norm="sym",
                 modality_weights={"image": 0.1, "text": 0.9})


def make(tiny_data, graph=SPEC, dims=None, **kw):
    data, split = tiny_data
    dims = dims or {m: int(data[ITEM][f"x_{m}"].size(1)) for m in data.modalities}
    torch.manual_seed(0)
    model = LIRDRec(data[USER].num_nodes, data[ITEM].num_nodes, modality_dims=dims, embedding_dim=8,
                    graph=graph, **kw)
    return model, prepare_data(model, data), split


def batches(split, n=3, size=32):
    b = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return [type(b)(*(t[s * size:(s + 1) * size] for t in b)) for s in range(n)]


def dense(edge_index, weight, n_dst, n_src):
    a = torch.zeros(n_dst, n_src)
    a.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return a


def test_no_item_id_embeddings_and_code_parameter_count():
    U, I = 19445, 7050  # Amazon Baby with MMRec's features: 6,138,626 parameters in the spec
    model = LIRDRec(U, I, modality_dims={"image": 4096, "text": 384})
    assert sum(p.numel() for p in model.parameters()) == 6_138_626
    assert not any(p.shape[0] == I for p in model.parameters())
    assert model.user_emb.std().item() == pytest.approx((2 / (U + 64)) ** 0.5, rel=0.02)


@pytest.mark.parametrize("mode", ["feature", "full", "none"])
def test_shared_input_is_the_dct_of_each_modality(tiny_data, mode):
    model, data, _ = make(tiny_data, dct=mode, fold_dct=False)
    parts = []
    for m in ("image", "text"):
        x = data[ITEM][f"x_{m}"].double().numpy()
        if mode == "feature":
            x = scipy.fft.dct(x, type=2, norm="ortho", axis=1)
        elif mode == "full":
            x = scipy.fft.dctn(x, type=2, norm="ortho", axes=(0, 1))
        parts.append(x)
    np.testing.assert_allclose(model.shared_input.numpy(), np.concatenate(parts, 1), atol=1e-5)
    assert "shared_input" not in model.state_dict()  # a constant, not saved


@pytest.mark.parametrize("drop_modality", [None, "image"])
def test_folded_dct_equals_the_transformed_input(tiny_data, drop_modality):
    """fold_dct: X (W C)^T instead of DCT(X) W^T — same outputs and gradients, no [I, sum F] buffer."""
    folded, data, split = make(tiny_data, drop_modality=drop_modality)
    plain, _, _ = make(tiny_data, drop_modality=drop_modality, fold_dct=False)
    plain.load_state_dict(folded.state_dict())
    assert folded.fold_dct and not plain.fold_dct and folded.shared_input.numel() == 0
    torch.testing.assert_close(folded.item_features(data), plain.item_features(data), atol=1e-5, rtol=1e-4)
    batch = batches(split, 1)[0]
    for model in (folded, plain):
        model.zero_grad()
        model.loss(data, batch)["loss"].backward()
    for (name, p), q in zip(folded.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-3, msg=name)


def test_forward_matches_dense_oracle(tiny_data):
    model, data, _ = make(tiny_data)
    model.eval()
    U, I, d = data[USER].num_nodes, data[ITEM].num_nodes, 8
    xi = model.item_features(data)
    assert xi.shape == (I, 3 * d)
    torch.testing.assert_close(xi.view(I, 3, d).norm(dim=-1), torch.ones(I, 3))  # unit blocks
    xu = model.user_features()
    r = dense(data[UI].edge_index, data[UI].edge_weight, I, U).t()
    a = torch.zeros(U + I, U + I)
    a[:U, U:], a[U:, :U] = r, r.t()
    x = torch.cat([xu, xi])
    summed = x + a @ x + a @ a @ x  # sum readout, 2 layers
    s = dense(data[II].edge_index, data[II].edge_weight, I, I)
    item = summed[U:] + s @ summed[U:]
    blocks = summed[:U].view(U, 3, d)
    scores = torch.cat([f(blocks[:, b]) for b, f in enumerate(model.pwc.scorers)], 1)
    w1, w2 = pwc_weights(0, 0.9, 0.9)
    alpha = torch.softmax(w1 * scores + w2 * model.pwc.theta, 1)
    out = model(data)
    torch.testing.assert_close(out["item"], item, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["user"], (blocks * alpha.unsqueeze(-1)).view(U, -1), atol=1e-5, rtol=1e-5)


def test_loss_is_mean_bpr_plus_full_matrix_mean_square(tiny_data):
    model, data, split = make(tiny_data)
    b = batches(split, 1)[0]
    losses = model.loss(data, b)
    emb = model(data)
    u = emb["user"][b.users]
    diff = (u * emb["item"][b.pos_items]).sum(-1) - (u * emb["item"][b.neg_items]).sum(-1)
    torch.testing.assert_close(losses["bpr"], -torch.nn.functional.logsigmoid(diff).mean())
    torch.testing.assert_close(losses["reg"], emb["user"].pow(2).mean() + emb["item"].pow(2).mean())
    torch.testing.assert_close(losses["loss"], losses["bpr"] + 0.01 * losses["reg"])


def test_pwc_follows_the_schedule_over_epochs_and_evaluation_is_fresh(tiny_data):
    model, data, split = make(tiny_data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(4):
        graph = model.train_graph(data, epoch)
        assert graph is not data and graph.get("lirdrec_epoch") == epoch + 1 and data.get("lirdrec_epoch") is None
        theta_before = model.pwc.theta.detach().clone()
        last_alpha = model.pwc.last_alpha.clone()
        model.train()
        for i, b in enumerate(batches(split)):
            opt.zero_grad()
            model.loss(graph, b)["loss"].backward()
            if i == 0:  # the epoch-start update happened before the first batch's forward
                assert int(model.pwc.step) == epoch + 1
                if epoch > 0:
                    assert not torch.equal(theta_before, last_alpha)
            opt.step()
        assert model.pwc.weights() == pwc_weights(epoch + 1, 0.9, 0.9)
    # the next epoch starts by copying the last training batch's weights into theta
    alpha = model.pwc.last_alpha.clone()
    torch.testing.assert_close(alpha.sum(1), torch.ones(data[USER].num_nodes))
    model.train()
    model(model.train_graph(data, 4))
    torch.testing.assert_close(model.pwc.theta.detach(), alpha)
    # evaluation: a fresh forward on the full data, with no side effect on the PWC state
    model.eval()
    before = model.pwc.last_alpha.clone()
    with torch.no_grad():
        a, b = model(data), model(data)
    assert torch.equal(a["user"], b["user"]) and torch.equal(model.pwc.last_alpha, before)


@pytest.mark.parametrize("dims", [{"image": 8}, {"image": 8, "text": 6}, {"image": 8, "text": 6, "audio": 5}])
def test_any_number_of_modalities(tiny_data, dims):
    data, split = tiny_data
    if "audio" in dims:
        data[ITEM].x_audio = torch.randn(data[ITEM].num_nodes, 5)
        data.modalities = [*data.modalities, "audio"]
    graph = GraphSpec(item_knn_k=5, modality_weights={m: 1 / len(dims) for m in dims})
    model, data, _ = make((data, split), graph=graph, dims=dims)
    out = model(data)
    assert out["item"].shape == (data[ITEM].num_nodes, 8 * (len(dims) + 1))
    model.loss(data, batches(split, 1)[0])["loss"].backward()


def test_ablations(tiny_data):
    model, data, _ = make(tiny_data, shared_branch=False)
    assert model.num_blocks == 2 and model(data)["item"].shape[1] == 16 and not hasattr(model, "shared")
    model, data, _ = make(tiny_data, drop_modality="image", fold_dct=False)
    assert model.modalities == ["text"] and model.graph_spec.modality_weights == {"text": 1.0}
    assert model.shared_input.shape[1] == data[ITEM].x_text.size(1)
    rows = torch.zeros(data[ITEM].num_nodes).index_add_(0, data[II].edge_index[1], data[II].edge_weight)
    torch.testing.assert_close(rows, torch.ones(data[ITEM].num_nodes))
    model, data, _ = make(tiny_data, graph=GraphSpec(item_knn_k=5), drop_modality="text")
    assert model.graph_spec.modality_weights == {"image": 1.0}
    concat, data, _ = make(tiny_data, pwc="concat")
    mean, _, _ = make(tiny_data, pwc="mean")
    assert not hasattr(concat, "pwc") and concat.train_graph(data, 0) is data
    torch.testing.assert_close(concat(data)["user"] / 3, mean(data)["user"])
    with pytest.raises(ValueError, match="drop_modality"):
        make(tiny_data, drop_modality="audio")
    code, data, _ = make(tiny_data)
    ego, _, _ = make(tiny_data, ii_residual="ego")  # same seed: same parameters
    s = dense(data[II].edge_index, data[II].edge_weight, data[ITEM].num_nodes, data[ITEM].num_nodes)
    x0 = code.item_features(data)
    h_code, h_ego = code(data)["item"], ego(data)["item"]
    # code: H = R + S R; ego: H = X0 + S R, so H_code - H_ego = R - X0 and H_ego = X0 + S (H_code - H_ego + X0)
    torch.testing.assert_close(h_ego, x0 + s @ (h_code - h_ego + x0), atol=1e-5, rtol=1e-5)


def test_cold_items_get_feature_representations(tiny_data):
    data, split = tiny_data
    keep = data[UI].edge_index[1] != 0  # item 0 becomes cold: no train interaction
    data[UI].edge_index = data[UI].edge_index[:, keep]
    data[IU].edge_index = data[UI].edge_index.flip(0)
    model, data, _ = make((data, split))
    model.eval()
    item = model(data)["item"]
    assert torch.isfinite(item).all() and (item.norm(dim=1) > 0).all()
    # its user-item readout is its ego row; the item graph adds its neighbours' readouts
    r0 = model.item_features(data)[0]
    s = dense(data[II].edge_index, data[II].edge_weight, data[ITEM].num_nodes, data[ITEM].num_nodes)
    assert s[0, 0] > 0 and not torch.allclose(item[0], 2 * r0)


@pytest.mark.parametrize("experiment,variants", [
    ("lirdrec_table3", {"wo_pwc": ("concat", True, None), "wo_dct": ("pwc", False, None),
                        "lirdrec": ("pwc", True, None)}),
    ("lirdrec_table4", {"wo_v": ("pwc", True, "image"), "wo_t": ("pwc", True, "text"),
                        "lirdrec": ("pwc", True, None)}),
])
def test_table_experiments_compose(cfg_tiny, experiment, variants):
    key = experiment.replace("lirdrec_", "") + "_variant"
    for variant, (pwc, shared, drop) in variants.items():
        cfg = cfg_tiny(f"experiment={experiment}", f"{key}={variant}")
        data, _ = instantiate(cfg.dataset, _convert_="all")
        model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
        assert (model.pwc_mode, model.shared_branch, model.drop_modality) == (pwc, shared, drop)
        assert model.graph_spec.modality_weights == ({"image": 0.1, "text": 0.9} if drop is None
                                                     else {({"image", "text"} - {drop}).pop(): 1.0})
    # the reference image share, mapped onto each dataset's modalities by the one documented rule
    for exp, mods, want in (("ref_lirdrec", ["text", "audio"], {"audio": 0.1, "text": 0.9}),
                            ("ref_freedom", ["image", "audio"], {"image": 0.1, "audio": 0.9})):
        cfg = cfg_tiny(f"experiment={exp}")
        spec = instantiate(cfg.model.graph)
        assert spec.reference_image_weight == 0.1 and spec.modality_weights is None
        assert spec.for_modalities(mods).modality_weights == pytest.approx(want)
