"""Recommender.from_run and experiments/recommend.py against independent oracles: the evaluator's
metrics, a dense masked ranking, the interactions of the file."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgraph.inference import InferenceError, Recommender
from mmgraph.training import run
from tests.models.test_models import MODEL_CONFIGS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    from tests.conftest import compose

    out = tmp_path_factory.mktemp("run")
    metrics = run(compose(["model=lightgcn", "trainer.max_epochs=3", "trainer.patience=5"], cache_dir), output_dir=out)
    return out, metrics


def _dense_topk(rec: Recommender, exclude: str, k: int):
    """Oracle: the whole [U, I] score matrix from the embeddings, masked with a Python set loop."""
    scores = (rec.user_embeddings() @ rec.item_embeddings().T).clone()
    stages = {"train": ["train"], "seen": ["train", "valid", "test"], "none": []}[exclude]
    for st in stages:
        for u, i in getattr(rec.split, st).T.tolist():
            scores[u, i] = float("-inf")
    return torch.topk(scores, k, dim=1)


@pytest.mark.parametrize("exclude", ["train", "seen", "none"])
def test_top_k_equals_a_dense_masked_ranking(trained, exclude):
    rec = Recommender.from_run(trained[0], device="cpu", block_size=7)
    got = rec.recommend(k=10, exclude=exclude)
    ref_v, ref_i = _dense_topk(rec, exclude, 10)
    assert got.users.tolist() == list(range(rec.num_users))
    assert torch.equal(got.items, ref_i) and torch.allclose(got.scores, ref_v.float())


def test_seen_never_recommends_an_interaction_of_the_file(trained):
    rec = Recommender.from_run(trained[0], device="cpu")
    got = rec.recommend(k=rec.num_items // 2, exclude="seen")
    seen = {(u, i) for st in ("train", "valid", "test") for u, i in getattr(rec.split, st).T.tolist()}
    pairs = {(u, i) for u, row in zip(got.users.tolist(), got.items.tolist()) for i in row if i >= 0}
    assert pairs and not (pairs & seen)


def test_exclude_train_reproduces_the_test_metrics(trained):
    out, metrics = trained
    rec = Recommender.from_run(out, device="cpu")
    users = rec.split.eval_users("test")
    got = rec.recommend(users, k=20, exclude="train")
    gt = {}
    for u, i in rec.split.test.T.tolist():
        gt.setdefault(u, set()).add(i)
    recall = np.mean([len(set(row) & gt[u]) / len(gt[u]) for u, row in zip(got.users.tolist(), got.items.tolist())])
    assert recall == pytest.approx(metrics["test"]["recall@20"], abs=1e-12)


def test_score_similar_items_and_embeddings(trained):
    rec = Recommender.from_run(trained[0], device="cpu")
    u, i = rec.user_embeddings(), rec.item_embeddings()
    assert u.shape[0] == rec.num_users and i.shape[0] == rec.num_items
    s = rec.score([0, 1, 2], [5, 6, 7])
    assert torch.allclose(s, torch.stack([u[0] @ i[5], u[1] @ i[6], u[2] @ i[7]]))
    m = rec.score([0, 1], [[1, 2, 3], [4, 5, 6]])
    assert m.shape == (2, 3) and torch.allclose(m[1, 2], u[1] @ i[6])
    sim = rec.similar_items([3, 4], k=5)
    normed = torch.nn.functional.normalize(i, dim=1)
    cos = normed @ normed.T
    cos.fill_diagonal_(float("-inf"))
    assert torch.equal(sim.items, torch.topk(cos[[3, 4]], 5, dim=1).indices)
    assert 3 not in sim.items[0].tolist()


def test_bad_queries_fail_clearly(trained, tmp_path):
    rec = Recommender.from_run(trained[0], device="cpu")
    with pytest.raises(InferenceError, match="unknown user id 999"):
        rec.recommend([0, 999])
    with pytest.raises(InferenceError, match="k must be a positive integer"):
        rec.recommend([0], k=0)
    with pytest.raises(InferenceError, match="exceeds the number of items"):
        rec.recommend([0], k=10_000)
    with pytest.raises(InferenceError, match="exclude must be one of"):
        rec.recommend([0], exclude="everything")
    with pytest.raises(InferenceError, match="integers"):
        rec.recommend(torch.tensor([0.5]))
    with pytest.raises(InferenceError, match="best.pt does not exist"):
        Recommender.from_run(tmp_path)


def test_mips_index_matches_exact(trained):
    pytest.importorskip("faiss")
    rec = Recommender.from_run(trained[0], device="cpu")
    exact = rec.recommend(k=10, exclude="seen")
    mips = rec.recommend(k=10, exclude="seen", index="mips")
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.items.tolist(), mips.items.tolist())])
    assert overlap == 1.0  # exact inner product search: the same lists (ties aside)
    assert torch.allclose(mips.scores, exact.scores, atol=1e-5)


def _cli():
    spec = importlib.util.spec_from_file_location("recommend_cli", REPO / "experiments" / "recommend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_csv_whose_recall_matches_metrics_json(trained, tmp_path):
    out, metrics = trained
    cli = _cli()
    csv_path = tmp_path / "recs.csv"
    assert cli.main([str(out), "--k", "20", "--exclude", "train", "--out", str(csv_path), "--device", "cpu",
                     "--no-progress", "--export-embeddings", str(tmp_path / "emb")]) == 0
    lists: dict[int, list[int]] = {}
    with csv_path.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["user", "rank", "item", "score"]
        for row in reader:
            lists.setdefault(int(row["user"]), []).append(int(row["item"]))
            assert int(row["rank"]) == len(lists[int(row["user"])])
    on_disk = json.loads((out / "metrics.json").read_text())
    rec = Recommender.from_run(out, device="cpu")
    gt = {}
    for u, i in rec.split.test.T.tolist():
        gt.setdefault(u, set()).add(i)
    recall = np.mean([len(set(lists[u]) & items) / len(items) for u, items in gt.items()])
    assert recall == pytest.approx(on_disk["test"]["recall@20"], abs=1e-12)
    assert np.load(tmp_path / "emb" / "user_emb.npy").shape == tuple(rec.user_embeddings().shape)


def test_cli_user_file_and_errors(trained, tmp_path, capsys):
    cli = _cli()
    users = tmp_path / "users.txt"
    users.write_text("# ids\n3\n\n5\n")
    csv_path = tmp_path / "r.csv"
    assert cli.main([str(trained[0]), "--users", str(users), "--k", "2", "--out", str(csv_path), "--no-progress"]) == 0
    assert [ln.split(",")[0] for ln in csv_path.read_text().splitlines()[1:]] == ["3", "3", "5", "5"]
    users.write_text("3\nabc\n")
    assert cli.main([str(trained[0]), "--users", str(users), "--out", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'abc'" in err and "Traceback" not in err
    assert cli.main([str(tmp_path / "nope"), "--out", str(csv_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_loads_from_a_one_epoch_run_and_recommends(tmp_path, cache_dir, name):
    from tests.conftest import compose

    run(compose([f"model={name}", "trainer.max_epochs=1"], cache_dir), output_dir=tmp_path)
    rec = Recommender.from_run(tmp_path, device="cpu")
    got = rec.recommend(k=5, exclude="train")
    # the served ranking is the model's own score, masked: check against model.score directly
    scores = rec.model.score(rec.user_embeddings(), rec.item_embeddings()).clone()
    for u, i in rec.split.train.T.tolist():
        scores[u, i] = float("-inf")
    assert torch.equal(got.items, torch.topk(scores, 5, dim=1).indices)


def test_ivf_visiting_every_cell_is_exact_and_non_dot_models_refuse_ann(trained):
    pytest.importorskip("faiss")
    rec = Recommender.from_run(trained[0], device="cpu")
    rec.index("ivf", num_cells=4, num_cells_to_visit=4)
    exact = rec.recommend(k=10, exclude="train")
    ivf = rec.recommend(k=10, exclude="train", index="ivf")
    assert torch.equal(ivf.items, exact.items)
    rec.dot_product = False  # as for a model with its own score function
    with pytest.raises(InferenceError, match="not a dot product"):
        rec.index("approx")


def test_cli_parquet_output_equals_csv(trained, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    cli = _cli()
    args = [str(trained[0]), "--k", "5", "--no-progress", "--device", "cpu"]
    assert cli.main([*args, "--out", str(tmp_path / "r.csv")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "r.parquet")]) == 0
    a, b = pd.read_csv(tmp_path / "r.csv"), pd.read_parquet(tmp_path / "r.parquet")
    assert list(b.columns) == ["user", "rank", "item", "score"] and len(a) == len(b)
    assert (a[["user", "rank", "item"]].values == b[["user", "rank", "item"]].values).all()
