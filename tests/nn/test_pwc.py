"""Progressive Weight Copying: the schedules (closed forms vs recursions) and the module."""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.nn.pwc import ProgressiveWeightCopying, pwc_weights


def recursion(tau: float, gamma: float, schedule: str, n_max: int) -> list[float]:
    """The schedules step by step, as written in the code / eq. 19 / Algorithm 2."""
    out = []
    if schedule == "code":
        w1, w2 = tau, 1 - tau
        for n in range(1, n_max + 1):
            eta = gamma**n
            s = w1 * eta + w2
            w1, w2 = w1 * eta / s, w2 / s
            out.append(w1)
    else:
        for n in range(1, n_max + 1):
            eta = gamma**n
            out.append(tau * eta / (tau * eta + 1 - tau))
            tau = tau * eta if schedule == "eq19" else tau * eta**2
    return out


@pytest.mark.parametrize("schedule", ["code", "eq19", "alg2"])
@pytest.mark.parametrize("tau", [0.9, 0.95, 0.99, 0.7])
def test_closed_form_equals_recursion(schedule, tau):
    rec = recursion(tau, 0.9, schedule, 25)
    for n, w in enumerate(rec, start=1):
        w1, w2 = pwc_weights(n, tau, 0.9, schedule)
        assert w1 == pytest.approx(w, rel=1e-9, abs=1e-300)
        assert w1 + w2 == pytest.approx(1.0)
    assert pwc_weights(0, tau, 0.9, schedule) == pytest.approx((tau, 1 - tau))


def test_published_schedule_values():
    # spec §8.2 / §18: w1 of the code's recursion, tau = 0.9, gamma = 0.9
    code = [round(pwc_weights(n, 0.9, 0.9)[0], 3) for n in range(1, 7)]
    assert code == [0.890, 0.868, 0.827, 0.758, 0.649, 0.496]
    assert pwc_weights(10, 0.9, 0.9)[0] == pytest.approx(0.0267, abs=1e-4)
    assert pwc_weights(10, 0.99, 0.9)[0] == pytest.approx(0.232, abs=1e-3)
    assert [round(pwc_weights(n, 0.9, 0.9, "eq19")[0], 3) for n in range(1, 6)] == [0.890, 0.775, 0.582, 0.376, 0.213]
    assert [round(pwc_weights(n, 0.9, 0.9, "alg2")[0], 3) for n in range(1, 6)] == [0.890, 0.685, 0.401, 0.183, 0.068]
    # logit(w1_n) = logit(tau) + n(n+1)/2 ln(gamma)
    n = 7
    w1 = pwc_weights(n, 0.95, 0.8)[0]
    assert math.log(w1 / (1 - w1)) == pytest.approx(math.log(0.95 / 0.05) + n * (n + 1) / 2 * math.log(0.8))
    assert pwc_weights(1000, 0.9, 0.9)[0] == 0.0


def test_module_copies_the_last_training_alpha_at_epoch_start():
    torch.manual_seed(0)
    pwc = ProgressiveWeightCopying(num_users=5, num_blocks=3, block_dim=4)
    x = torch.randn(5, 12)
    theta0 = pwc.theta.detach().clone()
    pwc.train()
    pwc.advance(1)  # epoch 1: nothing to copy yet
    assert torch.equal(pwc.theta.detach(), theta0)
    h, alpha = pwc(x)
    w1, w2 = pwc_weights(1, 0.9, 0.9)
    blocks = x.view(5, 3, 4)
    scores = torch.cat([f(blocks[:, b]) for b, f in enumerate(pwc.scorers)], 1)
    torch.testing.assert_close(alpha, torch.softmax(w1 * scores + w2 * theta0, 1))
    torch.testing.assert_close(alpha.sum(1), torch.ones(5))
    torch.testing.assert_close(h, (blocks * alpha.unsqueeze(-1)).reshape(5, 12))
    pwc.eval()
    pwc(torch.randn(5, 12))  # evaluation forwards are not copied
    pwc.advance(2)
    torch.testing.assert_close(pwc.theta.detach(), alpha.detach())
    assert int(pwc.step) == 2 and pwc.weights() == pwc_weights(2, 0.9, 0.9)
    pwc.advance(2)  # idempotent within an epoch
    torch.testing.assert_close(pwc.theta.detach(), alpha.detach())


def test_theta_modes():
    assert isinstance(ProgressiveWeightCopying(3, 2, 4).theta, torch.nn.Parameter)
    buf = ProgressiveWeightCopying(3, 2, 4, theta="buffer")
    assert "theta" in dict(buf.named_buffers()) and "theta" not in dict(buf.named_parameters())
    with pytest.raises(ValueError, match="schedule"):
        ProgressiveWeightCopying(3, 2, 4, schedule="fast")
