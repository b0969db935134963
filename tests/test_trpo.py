"""TRPO outer step against closed forms: CG = linear solve, the KL Hessian-vector product = the autograd Hessian
(also through a MAML inner step), and the line search's KL constraint and loss decrease."""

from __future__ import annotations

import math

import pytest
import torch

from intersection_meta.meta.trpo import (
    TRPOConfig,
    conjugate_gradient,
    flat,
    kl_hessian_vector_product,
    set_flat,
    trpo_step,
)
from intersection_meta.registry import ALGORITHMS

D = torch.float64


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=D)
    return a @ a.T + 0.5 * torch.eye(n, dtype=D)


@pytest.mark.parametrize("n", [2, 5, 12], ids=lambda n: f"n{n}")
def test_conjugate_gradient_equals_linear_solve(n: int) -> None:
    a = _spd(n, seed=n)
    b = torch.randn(n, generator=torch.Generator().manual_seed(100 + n), dtype=D)
    x = conjugate_gradient(lambda v: a @ v, b, iters=n, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_hvp_of_a_quadratic_kl_is_the_fisher_matrix_times_v() -> None:
    fisher = _spd(4, seed=1)
    x0 = torch.tensor([0.3, -0.2, 1.0, 0.5], dtype=D)
    x = torch.nn.Parameter(x0.clone())
    hvp = kl_hessian_vector_product(lambda: 0.5 * (x - x0) @ fisher @ (x - x0), [x], damping=0.1)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=D)
    torch.testing.assert_close(hvp(v), fisher @ v + 0.1 * v)


def test_hvp_through_a_maml_inner_step_matches_the_autograd_hessian() -> None:
    """KL(pi_old || pi(theta')) with theta' = theta - alpha * grad L_in(theta) (second order): the product
    equals the full Hessian (torch.autograd.functional.hessian of the composed function) times v."""
    torch.manual_seed(0)
    n_in, n_act = 3, 4
    obs = torch.randn(7, n_in, dtype=D)
    targets = torch.randn(7, n_act, dtype=D)
    alpha = 0.3

    def adapted(w: torch.Tensor) -> torch.Tensor:
        inner = ((obs @ w.view(n_in, n_act) - targets) ** 2).mean()
        (g,) = torch.autograd.grad(inner, w, create_graph=True)
        return w - alpha * g

    w0 = torch.randn(n_in * n_act, dtype=D)
    with torch.enable_grad():
        w_req = w0.clone().requires_grad_(True)
        old_logits = (obs @ adapted(w_req).view(n_in, n_act)).detach()
    old = torch.distributions.Categorical(logits=old_logits)

    def kl_of(w: torch.Tensor) -> torch.Tensor:
        new = torch.distributions.Categorical(logits=obs @ adapted(w).view(n_in, n_act))
        return torch.distributions.kl_divergence(old, new).mean()

    w = torch.nn.Parameter(w0.clone())
    hvp = kl_hessian_vector_product(lambda: kl_of(w), [w])
    v = torch.randn(n_in * n_act, dtype=D)
    hessian = torch.autograd.functional.hessian(kl_of, w0.clone().requires_grad_(True))
    torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-7, atol=1e-10)


def _quadratic_problem(curvature_scale: float):
    """Loss g.(x - x0) + c/2 |x - x0|^2 and KL 1/2 (x - x0)^T F (x - x0)."""
    fisher = _spd(3, seed=7)
    g = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    x0 = torch.tensor([0.1, 0.2, -0.3], dtype=D)
    x = torch.nn.Parameter(x0.clone())

    def loss() -> torch.Tensor:
        d = x - x0
        return g @ d + 0.5 * curvature_scale * (d @ d)

    def kl() -> torch.Tensor:
        d = x - x0
        return 0.5 * d @ fisher @ d

    return x, x0, g, fisher, loss, kl


def test_trpo_step_on_a_linear_loss_is_the_closed_form_natural_gradient_step() -> None:
    """With a linear loss the full step is accepted and equals -sqrt(2 delta / g^T F^-1 g) F^-1 g."""
    x, x0, g, fisher, loss, kl = _quadratic_problem(0.0)
    cfg = TRPOConfig(max_kl=0.02, cg_iters=3, damping=0.0)
    info = trpo_step([x], loss, kl, cfg)
    nat = torch.linalg.solve(fisher, g)
    expected = x0 - math.sqrt(2 * cfg.max_kl / float(g @ nat)) * nat
    torch.testing.assert_close(x.detach(), expected, rtol=1e-8, atol=1e-10)
    assert info.step_fraction == 1.0
    assert info.kl == pytest.approx(cfg.max_kl, rel=1e-6)
    assert info.kl <= cfg.max_kl
    assert info.loss_after < info.loss_before


def test_line_search_backtracks_until_the_loss_improves_and_the_kl_constraint_holds() -> None:
    """A strongly curved loss makes the full step worse than the start: the search shrinks it."""
    x, _, _, _, loss, kl = _quadratic_problem(200.0)
    cfg = TRPOConfig(max_kl=0.5, cg_iters=3, damping=0.0, backtrack_ratio=0.5, max_backtracks=20)
    info = trpo_step([x], loss, kl, cfg)
    assert 0.0 < info.step_fraction < 1.0
    assert info.backtracks > 1
    assert kl().item() <= cfg.max_kl
    assert loss().item() == pytest.approx(info.loss_after)
    assert info.loss_after < info.loss_before


def test_a_step_that_cannot_improve_is_rejected_and_parameters_restored() -> None:
    x, x0, _, _, _, kl = _quadratic_problem(0.0)
    # The loss rises in every direction from x0 except along a direction CG will not find with one trial.
    cfg = TRPOConfig(max_kl=0.01, cg_iters=3, damping=0.0, max_backtracks=1)
    info = trpo_step([x], lambda: ((x - x0) @ (x - x0)) * 1e6 + (x - x0).sum(), kl, cfg)
    assert info.step_fraction == 0.0
    torch.testing.assert_close(x.detach(), x0)


def test_set_flat_round_trip_and_size_check() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(3))
    v = torch.arange(7, dtype=torch.float32)
    set_flat([a, b], v)
    torch.testing.assert_close(flat([a.detach(), b.detach()]), v)
    with pytest.raises(ValueError, match="8 entries, parameters 7"):
        set_flat([a, b], torch.zeros(8))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("max_kl", 0.0, "max_kl"), ("backtrack_ratio", 1.0, "backtrack_ratio"), ("cg_iters", 0, "cg_iters")],
)
def test_config_rejects_bad_values(field: str, value: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TRPOConfig(**{field: value})


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_trpo_outer_step_runs_for_every_algorithm_and_respects_the_trust_region(algo: str) -> None:
    """Tiny CartPole meta-iterations with ``outer_optimizer=trpo``: the accepted step's exact KL (measured on
    the post-adaptation policies, through the inner loop) is within ``trpo_max_kl``; a rejected step leaves
    theta unchanged."""
    from intersection_meta.config import make_config
    from intersection_meta.trainer import Trainer
    from tests.test_trainer import TINY, tiny_scenario

    config = make_config({**TINY, "algo": algo, "outer_optimizer": "trpo", "trpo_max_kl": 0.02})
    trainer = Trainer(config, tiny_scenario())
    for _ in range(2):
        before = [p.detach().clone() for p in trainer.learner.meta_parameters()]
        row = trainer.step()
        moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.learner.meta_parameters(), strict=True))
        assert row["outer_kl"] <= 0.02
        if row["outer_step_fraction"] == 0.0:
            assert not moved or algo.startswith("directed_")  # the directed step moves theta before the outer step
        else:
            assert row["outer_kl"] > 0.0
