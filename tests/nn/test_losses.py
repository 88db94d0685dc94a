"""Losses with MMRec's exact definitions: BPRLoss, EmbLoss (norms, not squared), L2."""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.nn.losses import bpr_loss, emb_loss, l2_reg
from mmgraph.typing import BPRBatch


def test_bpr_loss_formula():
    torch.manual_seed(0)
    pos, neg = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    expected = -torch.mean(torch.log(1e-10 + torch.sigmoid(pos - neg)))
    torch.testing.assert_close(bpr_loss(pos, neg), expected, atol=1e-12, rtol=0)
    assert bpr_loss(pos, neg).dim() == 0


def test_bpr_loss_by_hand():
    # diff 0 -> -log(0.5) = log 2; diff = log 3 -> sigmoid = 3/4 -> -log(0.75)
    pos = torch.tensor([1.0, math.log(3.0)], dtype=torch.float64)
    neg = torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = (math.log(2.0) - math.log(0.75)) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, abs=1e-9)


def test_bpr_loss_gamma_keeps_it_finite():
    # sigmoid(-200) underflows to ~0 in float32: log(gamma) bounds the loss
    pos, neg = torch.tensor([-100.0]), torch.tensor([100.0])
    loss = bpr_loss(pos, neg)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-math.log(1e-10), rel=1e-5)
    assert bpr_loss(pos, neg, gamma=1e-5).item() == pytest.approx(-math.log(1e-5), rel=1e-4)


def test_bpr_loss_gradient_direction():
    pos = torch.zeros(3, requires_grad=True)
    neg = torch.zeros(3, requires_grad=True)
    bpr_loss(pos, neg).backward()
    # d/dpos of -log sigmoid(pos - neg) / n = -(1 - sigmoid(0)) / 3 = -1/6
    torch.testing.assert_close(pos.grad, torch.full((3,), -1 / 6))
    torch.testing.assert_close(neg.grad, torch.full((3,), 1 / 6))


def test_emb_loss_is_sum_of_norms_over_last_rows():
    torch.manual_seed(1)
    a = torch.randn(8, 4, dtype=torch.float64)
    b = torch.randn(5, 4, dtype=torch.float64)
    c = torch.randn(2, 4, dtype=torch.float64)
    expected = (torch.sqrt((a ** 2).sum()) + torch.sqrt((b ** 2).sum()) + torch.sqrt((c ** 2).sum())) / 2
    torch.testing.assert_close(emb_loss(a, b, c), expected, atol=1e-12, rtol=0)


def test_emb_loss_by_hand_not_squared():
    # ||[[3, 4]]||_F = 5, ||[[1, 0], [0, 0]]||_F = 1; divided by rows(last) = 2 -> 3
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert emb_loss(a, b).item() == pytest.approx(3.0)
    # the squared version would give (25 + 1) / 2 = 13
    assert emb_loss(a).item() == pytest.approx(5.0)


def test_emb_loss_matches_mmrec_torch_norm():
    """MMRec's EmbLoss: sum of torch.norm(e, p=2) (flattened Frobenius) / rows(e_last)."""
    torch.manual_seed(2)
    es = [torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)]
    ref = sum(torch.norm(e, p=2) for e in es) / es[-1].shape[0]
    torch.testing.assert_close(emb_loss(*es), ref)


def test_emb_loss_zero_is_finite_gradient():
    z = torch.zeros(4, 3, requires_grad=True)
    loss = emb_loss(z)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(z.grad).all()


def test_l2_reg():
    torch.manual_seed(3)
    a = torch.randn(7, 3, dtype=torch.float64)
    b = torch.randn(4, 3, dtype=torch.float64)
    expected = 0.5 * ((a ** 2).sum() + (b ** 2).sum()) / 4
    torch.testing.assert_close(l2_reg(a, b), expected, atol=1e-12, rtol=0)
    # by hand: 0.5 * (9 + 16) / 1
    assert l2_reg(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(12.5)


def test_l2_reg_gradient():
    a = torch.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    l2_reg(a).backward()
    torch.testing.assert_close(a.grad, a.detach() / 2)  # d/da 0.5 * ||a||^2 / 2 = a / 2


def test_bpr_l2_loss_is_batch_bpr_plus_weighted_l2():
    from mmgraph.nn.losses import bpr_l2_loss

    torch.manual_seed(0)
    user, item = torch.randn(5, 3), torch.randn(7, 3)
    batch = BPRBatch(torch.tensor([0, 4, 2]), torch.tensor([1, 6, 0]), torch.tensor([3, 2, 5]))
    out = bpr_l2_loss(user, item, batch, reg_weight=0.1)
    u, i, j = user[batch.users], item[batch.pos_items], item[batch.neg_items]
    bpr = -torch.nn.functional.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
    reg = 0.5 * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / 3
    assert torch.allclose(out["bpr"], bpr) and torch.allclose(out["reg"], reg)
    assert torch.allclose(out["loss"], bpr + 0.1 * reg)
