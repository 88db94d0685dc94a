"""FullRankingEvaluator: masking, batching, the one-forward contract, and a naive
per-user reference evaluator on random data."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch_geometric.data import HeteroData

from mmgraph.data.split import RecSplit
from mmgraph.evaluation import FullRankingEvaluator
from mmgraph.evaluation.metrics import ALL_METRICS as METRICS


class TableModel(torch.nn.Module):
    """Stub recommender whose scores are a fixed ``[U, I]`` table.

    ``forward`` returns user embeddings = the table rows and item embeddings = the
    identity, so ``score(u, i) = u @ i.T`` reproduces the table (a fresh tensor).
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.lin = torch.nn.Linear(1, 1)  # a parameter, so the module looks like a model
        self.forward_calls = 0
        self.score_calls = 0
        self.training_in_forward: list[bool] = []

    def forward(self, data) -> dict[str, torch.Tensor]:
        self.forward_calls += 1
        self.training_in_forward.append(self.training)
        return {"user": self.table.clone(), "item": torch.eye(self.table.size(1), dtype=self.table.dtype)}

    def score(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        self.score_calls += 1
        return u @ i.T


class WrongShapeModel(TableModel):
    def score(self, u, i):
        return (u @ i.T)[:, :-1]


def edges(pairs: list[tuple[int, int]]) -> torch.Tensor:
    if not pairs:
        return torch.empty(2, 0, dtype=torch.long)
    return torch.tensor(pairs, dtype=torch.long).T.contiguous()


def make_split(num_users, num_items, train, valid, test) -> RecSplit:
    return RecSplit(num_users, num_items, edges(train), edges(valid), edges(test))


# --------------------------------------------------------------------------- naive reference

def naive_metric(name: str, r: list[int], p: int, k: int) -> float:
    r = r[:k]
    if name == "recall":
        return sum(r) / p
    if name == "precision":
        return sum(r) / k
    if name == "hit":
        return float(sum(r) > 0)
    if name == "ndcg":
        dcg = sum(1 / math.log2(j + 2) for j, v in enumerate(r) if v)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, p)))
        return dcg / idcg
    if name == "map":
        found, total = 0, 0.0
        for j, v in enumerate(r, start=1):
            if v:
                found += 1
                total += found / j
        return total / min(k, p)
    if name == "mrr":
        return next((1 / (j + 1) for j, v in enumerate(r) if v), 0.0)
    raise AssertionError(name)


def naive_gini(counts: list[int]) -> float:
    c, n = sorted(counts), len(counts)
    total = sum(c)
    return sum((2 * (i + 1) - n - 1) * x for i, x in enumerate(c)) / (n * total) if total else 0.0


def naive_evaluate(table: torch.Tensor, split: RecSplit, stage: str, ks, metrics,
                   exclude_val_at_test: bool = False) -> dict[str, float]:
    """Per-user Python loop: drop excluded items, sort the rest by score, take the
    top-K (padded with misses when fewer candidates than K remain), average."""
    def by_user(e):
        d: dict[int, set[int]] = {}
        for u, i in e.T.tolist():
            d.setdefault(u, set()).add(i)
        return d

    train, valid, gt = by_user(split.train), by_user(split.valid), by_user(split.edge_label_index(stage))
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in metrics for k in ks}
    users = sorted(gt)
    pop = [0] * split.num_items
    for i in split.train[1].tolist():
        pop[i] += 1
    counts = {k: [0] * split.num_items for k in ks}
    for u in users:
        excluded = set(train.get(u, set()))
        if stage == "test" and exclude_val_at_test:
            excluded |= valid.get(u, set())
        scores = table[u].tolist()
        cands = [i for i in range(split.num_items) if i not in excluded]
        ranked = sorted(cands, key=lambda i: -scores[i])[:kmax]
        r = [1 if i in gt[u] else 0 for i in ranked]
        r += [0] * (kmax - len(r))
        for k in ks:
            for i in ranked[:k]:
                counts[k][i] += 1
        for m in metrics:
            for k in ks:
                if m == "avg_pop":
                    sums[f"{m}@{k}"] += sum(pop[i] for i in ranked[:k]) / len(ranked[:k])
                elif m not in ("coverage", "gini"):
                    sums[f"{m}@{k}"] += naive_metric(m, r, len(gt[u]), k)
    out = {key: v / len(users) for key, v in sums.items()}
    for k in ks:
        if "coverage" in metrics:
            out[f"coverage@{k}"] = sum(c > 0 for c in counts[k]) / split.num_items
        if "gini" in metrics:
            out[f"gini@{k}"] = naive_gini(counts[k])
    return out


def random_split(num_users: int, num_items: int, seed: int) -> RecSplit:
    """Per-user disjoint train/valid/test items; some users have no valid or no test
    interaction, some have fewer test items than K, some so many train items that
    fewer than max(K) candidates remain."""
    rng = random.Random(seed)
    train, valid, test = [], [], []
    for u in range(num_users):
        items = rng.sample(range(num_items), num_items)
        n_train = rng.choice([0, 1, 3, 8, 15, 30, 36])
        n_valid = rng.choice([0, 1, 2, 4])
        n_test = rng.choice([0, 1, 2, 3, 6, 12])
        n_test = min(n_test, num_items - n_train - n_valid)
        train += [(u, i) for i in items[:n_train]]
        valid += [(u, i) for i in items[n_train:n_train + n_valid]]
        test += [(u, i) for i in items[n_train + n_valid:n_train + n_valid + n_test]]
    rng.shuffle(train)  # the evaluator must not rely on input order
    rng.shuffle(test)
    return make_split(num_users, num_items, train, valid, test)


def random_table(num_users: int, num_items: int, seed: int) -> torch.Tensor:
    """Tie-free random scores: a random permutation of distinct values per row, all
    negative (in [-100, 0)), so masking with anything but -inf would be caught."""
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(num_items, generator=g) for _ in range(num_users)]).double()
    return (perms - num_items) * (100.0 / num_items)


# --------------------------------------------------------------------------- tests

U, I = 50, 40


@pytest.fixture(scope="module")
def rand_case():
    split = random_split(U, I, seed=0)
    table = random_table(U, I, seed=0)
    # the case covers what it claims to
    counts = torch.bincount(split.test[0], minlength=U)
    assert (counts == 0).any() and ((counts > 0) & (counts < 5)).any()
    assert (torch.bincount(split.train[0], minlength=U) > I - 10).any()  # < 10 candidates left
    return split, table


@pytest.mark.parametrize("stage", ["valid", "test"])
@pytest.mark.parametrize("exclude_val", [False, True])
def test_matches_naive_evaluator(rand_case, stage, exclude_val):
    split, table = rand_case
    ks = [5, 10, 50]  # 50 > I = 40: the hit matrix is padded with misses
    ev = FullRankingEvaluator(ks=ks, metrics=METRICS, batch_size=16, exclude_val_at_test=exclude_val)
    got = ev.evaluate(TableModel(table), None, split, stage)
    ref = naive_evaluate(table, split, stage, ks, METRICS, exclude_val)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_naive_evaluator_more_seeds(seed):
    split = random_split(U, I, seed=seed)
    table = random_table(U, I, seed=seed)
    ks = [1, 3, 20, 40, 45]
    got = FullRankingEvaluator(ks=ks, batch_size=13).evaluate(TableModel(table), HeteroData(), split, "test")
    ref = naive_evaluate(table, split, "test", ks, METRICS)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key


def test_k_larger_than_num_items_pads_with_misses():
    # 1 user, 3 items, item 2 in train; test item 1 ranked first among {0, 1}
    split = make_split(1, 3, [(0, 2)], [], [(0, 1)])
    table = torch.tensor([[0.1, 0.5, 0.9]])
    got = FullRankingEvaluator(ks=[1, 5], metrics=METRICS).evaluate(TableModel(table), None, split, "test")
    assert got["recall@5"] == pytest.approx(1.0)
    assert got["precision@5"] == pytest.approx(1 / 5)  # divided by K, not by the item count
    assert got["precision@1"] == pytest.approx(1.0)
    assert got["ndcg@5"] == pytest.approx(1.0)
    assert got["map@5"] == pytest.approx(1.0)
    assert got["hit@5"] == pytest.approx(1.0)


def test_train_items_are_never_recommended():
    """Train items get the highest scores; masked, the top-1 is always a test item."""
    split = random_split(U, I, seed=4)
    table = random_table(U, I, seed=4)
    for u, i in split.train.T.tolist():
        table[u, i] += 1000.0  # train above everything
    for u, i in split.test.T.tolist():
        table[u, i] += 500.0  # test next
    ev = FullRankingEvaluator(ks=[1, 5], metrics=["hit", "precision", "recall"])
    got = ev.evaluate(TableModel(table), None, split, "test")
    assert got["hit@1"] == 1.0
    assert got["precision@1"] == 1.0
    counts = torch.bincount(split.test[0], minlength=U).double()
    counts = counts[counts > 0]
    assert got["recall@5"] == pytest.approx((counts.clamp(max=5) / counts).mean().item(), abs=1e-12)
    # train items are masked at the validation stage as well
    table_v = random_table(U, I, seed=5)
    for u, i in split.train.T.tolist():
        table_v[u, i] += 1000.0
    for u, i in split.valid.T.tolist():
        table_v[u, i] += 500.0
    assert ev.evaluate(TableModel(table_v), None, split, "valid")["hit@1"] == 1.0


def test_exclude_val_at_test():
    # 2 users, 6 items. Scores: valid item highest, then the test item.
    split = make_split(2, 6, train=[(0, 0), (1, 1)], valid=[(0, 2), (1, 3)], test=[(0, 4), (1, 5)])
    table = torch.zeros(2, 6)
    table[0, 2], table[0, 4] = 2.0, 1.0
    table[1, 3], table[1, 5] = 2.0, 1.0
    table[0, 0] = table[1, 1] = 3.0  # train items on top (masked anyway)
    model = TableModel(table)
    default = FullRankingEvaluator(ks=[1, 2], metrics=["hit", "ndcg"])
    assert default.exclude_val_at_test is False
    off = default.evaluate(model, None, split, "test")
    assert off["hit@1"] == 0.0  # the unmasked valid item takes rank 1
    assert off["hit@2"] == 1.0
    assert off["ndcg@2"] == pytest.approx(1 / math.log2(3))
    on = FullRankingEvaluator(ks=[1, 2], metrics=["hit", "ndcg"], exclude_val_at_test=True).evaluate(
        model, None, split, "test")
    assert on["hit@1"] == 1.0 and on["ndcg@2"] == 1.0
    # at the validation stage the flag changes nothing: valid items are the targets
    for flag in (False, True):
        v = FullRankingEvaluator(ks=[1], metrics=["hit"], exclude_val_at_test=flag).evaluate(
            model, None, split, "valid")
        assert v["hit@1"] == 1.0
    # and test items are never masked at the validation stage
    table2 = table.clone()
    table2[0, 4] = table2[1, 5] = 2.5
    v = FullRankingEvaluator(ks=[1], metrics=["hit"]).evaluate(TableModel(table2), None, split, "valid")
    assert v["hit@1"] == 0.0


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_batch_size_does_not_change_results(rand_case, stage):
    split, table = rand_case
    results = []
    for bs in (1, 7, U, 10 * U):
        ev = FullRankingEvaluator(ks=[5, 10, 50], batch_size=bs, exclude_val_at_test=True)
        results.append(ev.evaluate(TableModel(table), None, split, stage))
    for r in results[1:]:
        assert r.keys() == results[0].keys()
        for key in r:
            assert r[key] == pytest.approx(results[0][key], abs=1e-12), key


def test_users_without_positives_are_excluded_from_mean():
    # 4 users; only users 0 and 2 have test items. User 0 hits at rank 1, user 2 misses.
    split = make_split(4, 5, train=[(0, 0), (1, 0), (2, 0), (3, 0)], valid=[(1, 1), (3, 2)],
                       test=[(0, 3), (2, 4)])
    table = torch.tensor([[0.0, 0.1, 0.2, 0.9, 0.3],   # user 0: item 3 first -> hit
                          [0.0, 0.1, 0.2, 0.3, 0.4],
                          [0.0, 0.9, 0.8, 0.7, 0.1],   # user 2: item 4 last -> miss at k=1
                          [0.0, 0.1, 0.2, 0.3, 0.4]])
    got = FullRankingEvaluator(ks=[1, 4], metrics=["hit", "recall"]).evaluate(TableModel(table), None, split, "test")
    assert got["hit@1"] == pytest.approx(1 / 2)  # not 1/4: denominator = 2 evaluated users
    assert got["recall@1"] == pytest.approx(1 / 2)
    assert got["hit@4"] == pytest.approx(1.0)  # user 2's test item is 4th of 4 candidates
    assert split.eval_users("test").tolist() == [0, 2]
    # validation: users 1 and 3
    v = FullRankingEvaluator(ks=[1], metrics=["hit"]).evaluate(TableModel(table), None, split, "valid")
    # user 1: candidates {1,2,3,4}, valid item 1 has the lowest score -> miss; user 3 likewise
    assert v["hit@1"] == 0.0


def test_no_users_in_stage_gives_zeros():
    split = make_split(3, 4, train=[(0, 0)], valid=[], test=[(1, 1)])
    got = FullRankingEvaluator(ks=[2], metrics=["recall"]).evaluate(TableModel(torch.rand(3, 4)), None, split, "valid")
    assert got == {"recall@2": 0.0}
    got = FullRankingEvaluator(ks=[2], metrics=["recall", "coverage"]).evaluate(
        TableModel(torch.rand(3, 4)), None, split, "valid", per_user=True)
    assert got[0] == {"recall@2": 0.0, "coverage@2": 0.0} and got[1]["users"].size == 0


def test_forward_called_once_and_score_per_batch(rand_case):
    split, table = rand_case
    n_users = split.eval_users("test").numel()
    for bs in (1, 7, 4096):
        model = TableModel(table)
        FullRankingEvaluator(ks=[5], batch_size=bs).evaluate(model, HeteroData(), split, "test")
        assert model.forward_calls == 1
        assert model.score_calls == math.ceil(n_users / bs)


@pytest.mark.parametrize("initially_training", [True, False])
def test_training_flag_restored(rand_case, initially_training):
    split, table = rand_case
    model = TableModel(table)
    model.train(initially_training)
    FullRankingEvaluator(ks=[5]).evaluate(model, None, split, "test")
    assert model.training_in_forward == [False]  # evaluated in eval mode
    assert model.training is initially_training
    assert all(m.training is initially_training for m in model.modules())


def test_training_flag_restored_on_error(rand_case):
    split, table = rand_case
    model = WrongShapeModel(table)
    model.train()
    with pytest.raises(ValueError, match="shape"):
        FullRankingEvaluator(ks=[5]).evaluate(model, None, split, "test")
    assert model.training is True


def test_no_grad_during_evaluation(rand_case):
    split, table = rand_case
    seen = []

    class GradSpy(TableModel):
        def score(self, u, i):
            seen.append(torch.is_grad_enabled())
            return super().score(u, i)

    FullRankingEvaluator(ks=[5], batch_size=20).evaluate(GradSpy(table), None, split, "test")
    assert seen and not any(seen)


def test_result_keys_and_types(rand_case):
    split, table = rand_case
    ev = FullRankingEvaluator(ks=[20, 5], metrics=["ndcg", "recall"])
    assert ev.ks == [5, 20]
    got = ev.evaluate(TableModel(table), None, split, "valid")
    assert set(got) == {"ndcg@5", "ndcg@20", "recall@5", "recall@20"}
    assert all(type(v) is float for v in got.values())
    default = FullRankingEvaluator()
    assert default.ks == [5, 10, 20, 50] and list(default.metrics) == list(METRICS)


def test_duplicate_ks_and_metrics_are_not_double_counted(rand_case):
    split, table = rand_case
    once = FullRankingEvaluator(ks=[5, 10], metrics=["recall", "hit"]).evaluate(TableModel(table), None, split, "test")
    dup = FullRankingEvaluator(ks=[10, 5, 5], metrics=["recall", "hit", "recall"]).evaluate(
        TableModel(table), None, split, "test")
    assert dup == pytest.approx(once, abs=1e-12)


def test_evaluate_embeddings_equals_evaluate(rand_case):
    split, table = rand_case
    ev = FullRankingEvaluator(ks=[5, 10])
    model = TableModel(table)
    emb = model(None)
    a = ev.evaluate_embeddings(model.score, emb["user"], emb["item"], split, "test")
    b = ev.evaluate(model, None, split, "test")
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(ks=[]), dict(ks=[0]), dict(ks=[5, -1]),
    dict(metrics=["recall", "auc"]), dict(metrics=["Recall"]),
    dict(batch_size=0), dict(batch_size=-3),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        FullRankingEvaluator(**kwargs)


def test_bad_stage_raises(rand_case):
    split, table = rand_case
    with pytest.raises(ValueError, match="stage"):
        FullRankingEvaluator(ks=[5]).evaluate(TableModel(table), None, split, "train")


def test_wrong_score_shape_raises(rand_case):
    split, table = rand_case
    with pytest.raises(ValueError, match="shape"):
        FullRankingEvaluator(ks=[5]).evaluate(WrongShapeModel(table), None, split, "test")

    class Transposed(TableModel):
        def score(self, u, i):
            return (u @ i.T).T

    with pytest.raises(ValueError, match="shape"):
        FullRankingEvaluator(ks=[5], batch_size=7).evaluate(Transposed(table), None, split, "test")


def test_dot_product_fast_path_equals_explicit_score_and_cpu_blocks():
    """GraphRecommender's default score takes the buffered path; results equal an explicit scorer."""
    from mmgraph.data.split import RecSplit
    from mmgraph.evaluation import FullRankingEvaluator
    from mmgraph.models.base import GraphRecommender

    g = torch.Generator().manual_seed(3)
    U, I = 30, 25
    pairs = torch.randperm(U * I, generator=g)[:300]
    e = torch.stack([pairs // I, pairs % I])
    split = RecSplit(U, I, e[:, :200], e[:, 200:250], e[:, 250:])
    ue, ie = torch.randn(U, 8, generator=g), torch.randn(I, 8, generator=g)

    class Dot(GraphRecommender):
        def forward(self, data):
            return {"user": ue, "item": ie}

        def loss(self, data, batch):  # pragma: no cover - not used
            raise NotImplementedError

    ref = FullRankingEvaluator(ks=[5, 20]).evaluate_embeddings(lambda a, b: a @ b.t(), ue, ie, split, "test")
    for block_mb in (16.0, 1e-4):  # 1e-4 MB -> one user per block
        ev = FullRankingEvaluator(ks=[5, 20], cpu_block_mb=block_mb)
        got = ev.evaluate(Dot(U, I), None, split, "test")
        assert got == pytest.approx(ref, abs=1e-12)
