"""build_graph + GraphSpec: what is added, fused kNN weights, the content-hash cache, purity."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import mmgraph.graph.build as build_mod
from mmgraph.data import load_mmrec
from mmgraph.graph import (
    GraphSpec,
    bipartite_norm,
    build_graph,
    cointeraction_knn_graph,
    knn_graph,
    scatter_mean_features,
    sym_norm,
    tensor_digest,
)
from mmgraph.graph.norm import normalize
from mmgraph.typing import II, ITEM, IU, UI, USER, UU, item_knn_type


def dense_of(out, et, to_dense):
    n_src = out[et[0]].num_nodes
    n_dst = out[et[2]].num_nodes
    return to_dense(out[et].edge_index, out[et].edge_weight, n_src, n_dst)


def check_adj_t(out, et, to_dense):
    adj_t = out[et].adj_t
    assert adj_t.layout == torch.sparse_csr
    assert adj_t.shape == (out[et[2]].num_nodes, out[et[0]].num_nodes)
    torch.testing.assert_close(adj_t.to_dense(), dense_of(out, et, to_dense))


def knn_dense(x, k, I, to_dense, loop=True, weighted=False, norm="sym"):
    e, w = knn_graph(x, k, loop=loop, weighted=weighted)
    return to_dense(e, normalize(e, I, w, norm), I, I)


# --------------------------------------------------------------------------- user–item graph


def test_default_spec_adds_normalised_ui_and_iu(hetero, to_dense):
    out = build_graph(hetero, None)
    U, I = hetero[USER].num_nodes, hetero[ITEM].num_nodes
    ei = hetero[UI].edge_index
    assert torch.equal(out[UI].edge_index, ei)
    assert torch.equal(out[IU].edge_index, ei.flip(0))
    torch.testing.assert_close(out[UI].edge_weight, bipartite_norm(ei, U, I))
    torch.testing.assert_close(out[IU].edge_weight, out[UI].edge_weight)
    for et in (UI, IU):
        check_adj_t(out, et, to_dense)
    assert sorted(out.edge_types) == sorted([UI, IU])
    # LightGCN's D_u^-1/2 R D_i^-1/2
    R = torch.zeros(U, I)
    R[ei[0], ei[1]] = 1
    du, di = R.sum(1), R.sum(0)
    want = R / torch.sqrt(du.clamp_min(1)[:, None] * di.clamp_min(1)[None, :])
    torch.testing.assert_close(dense_of(out, IU, to_dense), want)


def test_ui_norm_none_gives_ones(hetero):
    out = build_graph(hetero, GraphSpec(ui_norm="none"))
    assert torch.equal(out[UI].edge_weight, torch.ones(hetero[UI].edge_index.size(1)))
    assert torch.equal(out[IU].edge_weight, out[UI].edge_weight)


# --------------------------------------------------------------------------- item–item graphs


def test_item_knn_fused_with_modality_weights(hetero, to_dense):
    I = hetero[ITEM].num_nodes
    spec = GraphSpec(item_knn_k=3, modality_weights={"image": 0.7, "text": 0.3})
    out = build_graph(hetero, spec)
    want = 0.7 * knn_dense(hetero[ITEM].x_image, 3, I, to_dense) + 0.3 * knn_dense(hetero[ITEM].x_text, 3, I, to_dense)
    torch.testing.assert_close(dense_of(out, II, to_dense), want)
    check_adj_t(out, II, to_dense)
    assert item_knn_type("image") not in out.edge_types  # item_knn_modalities=False
    assert item_knn_type("text") not in out.edge_types
    # fused: coalesced, no duplicate edges
    key = out[II].edge_index[0] * I + out[II].edge_index[1]
    assert key.unique().numel() == key.numel()


def test_item_knn_equal_weights_by_default(hetero, to_dense):
    I = hetero[ITEM].num_nodes
    out = build_graph(hetero, GraphSpec(item_knn_k=4))
    want = 0.5 * knn_dense(hetero[ITEM].x_image, 4, I, to_dense) + 0.5 * knn_dense(hetero[ITEM].x_text, 4, I, to_dense)
    torch.testing.assert_close(dense_of(out, II, to_dense), want)


def test_item_knn_per_modality_types(hetero, to_dense):
    I = hetero[ITEM].num_nodes
    spec = GraphSpec(item_knn_k=3, item_knn_modalities=True, item_knn_norm="row", item_knn_weighted=True,
                     modality_weights={"image": 1.0, "text": 2.0})
    out = build_graph(hetero, spec)
    for m in ("image", "text"):
        et = item_knn_type(m)
        assert et in out.edge_types
        torch.testing.assert_close(
            dense_of(out, et, to_dense),
            knn_dense(hetero[ITEM][f"x_{m}"], 3, I, to_dense, weighted=True, norm="row"),
        )
        check_adj_t(out, et, to_dense)
        assert (torch.bincount(out[et].edge_index[1], minlength=I) == 3).all()  # k per node
    torch.testing.assert_close(
        dense_of(out, II, to_dense),
        dense_of(out, item_knn_type("image"), to_dense) + 2.0 * dense_of(out, item_knn_type("text"), to_dense),
    )


def test_zero_weight_modality_is_left_out_of_the_fused_graph(hetero, to_dense):
    I = hetero[ITEM].num_nodes
    out = build_graph(hetero, GraphSpec(item_knn_k=3, modality_weights={"image": 1.0, "text": 0.0}))
    torch.testing.assert_close(dense_of(out, II, to_dense), knn_dense(hetero[ITEM].x_image, 3, I, to_dense))
    out = build_graph(hetero, GraphSpec(item_knn_k=3, modality_weights={"text": 1.0}))
    torch.testing.assert_close(dense_of(out, II, to_dense), knn_dense(hetero[ITEM].x_text, 3, I, to_dense))


def test_item_knn_loop_and_weighted_flags(hetero):
    x = hetero[ITEM].x_image
    out = build_graph(hetero, GraphSpec(item_knn_k=3, item_knn_loop=False, item_knn_norm="none",
                                        item_knn_weighted=True, item_knn_modalities=True))
    et = item_knn_type("image")
    assert not (out[et].edge_index[0] == out[et].edge_index[1]).any()
    e, w = knn_graph(x, 3, loop=False, weighted=True)
    assert torch.equal(out[et].edge_index, e)
    torch.testing.assert_close(out[et].edge_weight, w)
    out = build_graph(hetero, GraphSpec(item_knn_k=3, item_knn_norm="none", item_knn_modalities=True))
    assert int((out[et].edge_index[0] == out[et].edge_index[1]).sum()) == hetero[ITEM].num_nodes
    assert torch.equal(out[et].edge_weight, torch.ones(3 * hetero[ITEM].num_nodes))


def test_unknown_modality_raises(hetero):
    with pytest.raises(ValueError, match=r"modality_weights names \['audio'\]"):
        build_graph(hetero, GraphSpec(item_knn_k=3, modality_weights={"image": 0.5, "audio": 0.5}))


def test_item_knn_without_modalities_raises(hetero):
    del hetero[ITEM].x_image
    del hetero[ITEM].x_text
    with pytest.raises(ValueError, match="no modality"):
        build_graph(hetero, GraphSpec(item_knn_k=3))


# --------------------------------------------------------------------------- user–user graphs


def test_user_knn_from_interactions(hetero, to_dense):
    U, I = hetero[USER].num_nodes, hetero[ITEM].num_nodes
    ei = hetero[UI].edge_index
    out = build_graph(hetero, GraphSpec(user_knn_k=3))
    e, w = cointeraction_knn_graph(ei, U, I, 3)
    torch.testing.assert_close(dense_of(out, UU, to_dense), to_dense(e, sym_norm(e, U, w), U, U))
    check_adj_t(out, UU, to_dense)
    assert not (out[UU].edge_index[0] == out[UU].edge_index[1]).any()
    assert II not in out.edge_types


def test_user_knn_from_a_modality(hetero, to_dense):
    U = hetero[USER].num_nodes
    ei = hetero[UI].edge_index
    spec = GraphSpec(user_knn_k=4, user_knn_source="text", user_knn_norm="row", user_knn_weighted=False)
    out = build_graph(hetero, spec)
    mean = scatter_mean_features(ei, hetero[ITEM].x_text, U)
    e, w = knn_graph(mean, 4, loop=False, weighted=False)
    torch.testing.assert_close(dense_of(out, UU, to_dense), to_dense(e, normalize(e, U, w, "row"), U, U))
    assert not (out[UU].edge_index[0] == out[UU].edge_index[1]).any()


def test_unknown_user_knn_source_raises(hetero):
    with pytest.raises(ValueError, match="user_knn_source='audio'"):
        build_graph(hetero, GraphSpec(user_knn_k=2, user_knn_source="audio"))


# --------------------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ui_norm="row"), "ui_norm"),
        (dict(item_knn_norm="l1"), "item_knn_norm"),
        (dict(user_knn_norm="max"), "user_knn_norm"),
        (dict(item_knn_k=0), "item_knn_k"),
        (dict(user_knn_k=-2), "user_knn_k"),
    ],
)
def test_graphspec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphSpec(**kwargs)


def test_block_size_is_not_part_of_spec_identity():
    assert GraphSpec(item_knn_k=3, block_size=1) == GraphSpec(item_knn_k=3, block_size=64)
    assert GraphSpec(item_knn_k=3) != GraphSpec(item_knn_k=4)


def test_block_size_does_not_change_the_graph(hetero):
    a = build_graph(hetero, GraphSpec(item_knn_k=3, user_knn_k=3, block_size=1))
    b = build_graph(hetero, GraphSpec(item_knn_k=3, user_knn_k=3, block_size=None))
    for et in (II, UU):
        assert torch.equal(a[et].edge_index, b[et].edge_index)
        torch.testing.assert_close(a[et].edge_weight, b[et].edge_weight)


def test_tensor_digest():
    x = torch.arange(12.0).view(3, 4)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.view(4, 3))
    assert tensor_digest(x) != tensor_digest(x.double())
    y = x.clone()
    y[2, 3] += 1e-3
    assert tensor_digest(x) != tensor_digest(y)
    assert tensor_digest(x.t()) == tensor_digest(x.t().contiguous())
    assert tensor_digest(x, y) != tensor_digest(y, x)
    assert tensor_digest(torch.empty(0)) == tensor_digest(torch.empty(0))


# --------------------------------------------------------------------------- cache


@pytest.fixture
def counting(monkeypatch):
    """Count the kNN computations that build_graph starts (by function and modality)."""
    calls = {"knn": 0, "co": 0}
    real_knn, real_co = build_mod.knn_graph, build_mod.cointeraction_knn_graph

    def knn(*a, **k):
        calls["knn"] += 1
        return real_knn(*a, **k)

    def co(*a, **k):
        calls["co"] += 1
        return real_co(*a, **k)

    monkeypatch.setattr(build_mod, "knn_graph", knn)
    monkeypatch.setattr(build_mod, "cointeraction_knn_graph", co)

    def take():
        out = dict(calls)
        calls.update(knn=0, co=0)
        return out

    return take


def same_graphs(a, b, ets):
    for et in ets:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
        assert torch.equal(a[et].edge_weight, b[et].edge_weight)


def test_second_build_loads_from_cache(hetero, tmp_path, counting, caplog):
    spec = GraphSpec(item_knn_k=3, user_knn_k=3)
    first = build_graph(hetero, spec, cache_dir=tmp_path)
    assert counting() == {"knn": 2, "co": 1}
    files = sorted(p.name for p in (tmp_path / "graphs").iterdir())
    assert len(files) == 3 and all(f.endswith(".pt") for f in files)
    assert any(f.startswith("item_knn_image-") for f in files)
    with caplog.at_level(logging.INFO, logger="mmgraph.graph.build"):
        second = build_graph(hetero, spec, cache_dir=tmp_path)
    assert counting() == {"knn": 0, "co": 0}
    assert sum("loaded from cache" in r.getMessage() for r in caplog.records) == 3
    same_graphs(first, second, (UI, IU, II, UU))
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == files


def test_no_cache_dir_always_builds(hetero, counting):
    spec = GraphSpec(item_knn_k=3)
    build_graph(hetero, spec)
    build_graph(hetero, spec)
    assert counting()["knn"] == 4


@pytest.mark.parametrize(
    "change,rebuilt",
    [
        (dict(item_knn_k=4), 2),
        (dict(item_knn_loop=False), 2),
        (dict(item_knn_weighted=True), 2),
        (dict(block_size=2), 0),
        (dict(item_knn_norm="row"), 0),  # normalisation is applied after the cache
        (dict(modality_weights={"image": 0.9, "text": 0.1}), 0),
        (dict(item_knn_modalities=True), 0),
        (dict(user_knn_k=2), 0),  # only the user graph is new
    ],
)
def test_cache_key_follows_the_fields_that_shape_the_graph(hetero, tmp_path, counting, change, rebuilt):
    base = dict(item_knn_k=3)
    build_graph(hetero, GraphSpec(**base), cache_dir=tmp_path)
    counting()
    out = build_graph(hetero, GraphSpec(**{**base, **change}), cache_dir=tmp_path)
    assert counting()["knn"] == rebuilt
    ref = build_graph(hetero, GraphSpec(**{**base, **change}))  # no cache
    same_graphs(out, ref, (II,))


def test_cache_key_follows_the_features(hetero, tmp_path, counting):
    spec = GraphSpec(item_knn_k=3, item_knn_modalities=True)
    before = build_graph(hetero, spec, cache_dir=tmp_path)
    counting()
    changed = hetero.clone()
    changed[ITEM].x_image = hetero[ITEM].x_image.flip(0).contiguous()
    after = build_graph(changed, spec, cache_dir=tmp_path)
    assert counting()["knn"] == 1  # the image graph only; text is reused
    ref = build_graph(changed, spec)
    same_graphs(after, ref, (II, item_knn_type("image"), item_knn_type("text")))
    assert not torch.equal(after[item_knn_type("image")].edge_index, before[item_knn_type("image")].edge_index)


def test_cache_key_follows_train_edges_for_user_graphs(tmp_path, counting, make_graph_data):
    a = make_graph_data(seed=0)
    b = make_graph_data(seed=0)
    b[UI].edge_index = b[UI].edge_index[:, :-5]
    b[IU].edge_index = b[UI].edge_index.flip(0)
    for src in ("interactions", "image"):
        spec = GraphSpec(user_knn_k=3, user_knn_source=src)
        build_graph(a, spec, cache_dir=tmp_path)
        counting()
        build_graph(a, spec, cache_dir=tmp_path)
        assert sum(counting().values()) == 0
        out = build_graph(b, spec, cache_dir=tmp_path)
        assert sum(counting().values()) == 1
        same_graphs(out, build_graph(b, spec), (UU,))


def test_user_knn_modality_cache_follows_features(tmp_path, counting, hetero):
    spec = GraphSpec(user_knn_k=3, user_knn_source="image")
    build_graph(hetero, spec, cache_dir=tmp_path)
    counting()
    changed = hetero.clone()
    changed[ITEM].x_image = hetero[ITEM].x_image * torch.linspace(1, 2, 6)  # new direction
    build_graph(changed, spec, cache_dir=tmp_path)
    assert counting()["knn"] == 1


# --------------------------------------------------------------------------- purity


def test_build_graph_does_not_mutate_input(hetero):
    before_types = list(hetero.edge_types)
    ui = hetero[UI].edge_index.clone()
    iu = hetero[IU].edge_index.clone()
    out = build_graph(hetero, GraphSpec(item_knn_k=3, user_knn_k=3, item_knn_modalities=True))
    assert hetero.edge_types == before_types
    assert set(hetero[UI].keys()) == {"edge_index"} and set(hetero[IU].keys()) == {"edge_index"}
    assert torch.equal(hetero[UI].edge_index, ui) and torch.equal(hetero[IU].edge_index, iu)
    assert out is not hetero
    assert {II, UU, item_knn_type("image")} <= set(out.edge_types)
    # features are shared, not copied
    assert out[ITEM].x_image.data_ptr() == hetero[ITEM].x_image.data_ptr()


def test_build_graph_never_uses_valid_or_test(tmp_path):
    # users 0 and 1 share items only through valid/test rows
    rows = [
        (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 5, 1), (0, 6, 2),
        (1, 3, 0), (1, 4, 0), (1, 7, 0), (1, 5, 1), (1, 6, 2),
        (2, 0, 0), (2, 3, 0), (2, 7, 0), (2, 1, 1), (2, 4, 2),
        (3, 2, 0), (3, 4, 0), (3, 6, 0), (3, 0, 1), (3, 7, 2),
    ]  # fmt: skip
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_text(
        "userID\titemID\trating\tx_label\n" + "\n".join(f"{u}\t{i}\t1\t{lab}" for u, i, lab in rows) + "\n"
    )
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.standard_normal((8, 3)).astype(np.float32))
    data, split = load_mmrec(tmp_path, "toy")
    out = build_graph(data, GraphSpec(item_knn_k=2, user_knn_k=1, user_knn_weighted=True, user_knn_norm="none"))
    train = {(u, i) for u, i, lab in rows if lab == 0}
    held = {(u, i) for u, i, lab in rows if lab != 0}
    for et in (UI,):
        got = set(map(tuple, out[et].edge_index.t().tolist()))
        assert got == train and not (got & held)
    assert set(map(tuple, out[IU].edge_index.flip(0).t().tolist())) == train
    # co-interaction counts use train rows only: users 0 and 1 share nothing in train
    e, w = out[UU].edge_index, out[UU].edge_weight
    U = split.num_users
    C = torch.zeros(U, U)
    C[e[1], e[0]] = w
    assert C[0, 1] == 0 and C[1, 0] == 0
    R = torch.zeros(U, 8)
    R[split.train[0], split.train[1]] = 1
    counts = R @ R.t()
    counts.fill_diagonal_(-1)
    torch.testing.assert_close(w.view(U, 1).squeeze(1), counts.max(1).values)


def test_user_knn_modality_cache_follows_number_of_users(tmp_path, make_graph_data):
    # same train edges and features, but two more users (e.g. users only in valid/test):
    # the cached graph of the smaller dataset must not be reused
    a = make_graph_data(seed=0)
    b = make_graph_data(seed=0)
    b[USER].num_nodes = a[USER].num_nodes + 2
    spec = GraphSpec(user_knn_k=3, user_knn_source="image")
    build_graph(a, spec, cache_dir=tmp_path)
    out = build_graph(b, spec, cache_dir=tmp_path)
    ref = build_graph(b, spec)
    same_graphs(out, ref, (UU,))
    assert out[UU].edge_index.size(1) == 3 * b[USER].num_nodes
    assert out[UU].adj_t.shape == (b[USER].num_nodes, b[USER].num_nodes)
    # same for the co-interaction graph
    spec = GraphSpec(user_knn_k=3)
    build_graph(a, spec, cache_dir=tmp_path)
    same_graphs(build_graph(b, spec, cache_dir=tmp_path), build_graph(b, spec), (UU,))
