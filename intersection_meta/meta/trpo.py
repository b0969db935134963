"""TRPO outer step: a KL-bounded meta-update (Schulman et al. 2015, as used by the MAML-RL paper).

The MAML paper (Finn et al. 2017, section 5.3) meta-trains RL policies with TRPO as the outer optimiser: the
meta-objective is the importance-weighted surrogate of the *post-adaptation* policies, and the trust region is the
mean KL divergence between the post-adaptation policies before and after the update::

    max_theta  1/N sum_i E_{s,a ~ pi_old_i} [ pi_{theta_i'(theta)}(a|s) / pi_old_i(a|s) A_i ],
               pi_old_i = pi_{theta_i'(theta_old)}
    s.t.       1/N sum_i E_s [ KL(pi_{theta_i'(theta_old)}(.|s) || pi_{theta_i'(theta)}(.|s)) ] <= delta

with ``theta_i'(theta)`` the adapted parameters (through the inner loop, second order for MAML). One step:

1. ``g = grad L(theta)`` (``L`` = minus the surrogate);
2. ``s = F^-1 g`` by conjugate gradient, with ``F v`` the Hessian-vector product of the mean KL at ``theta_old``
   (plus ``damping * v``), differentiated through the inner loop;
3. the full step ``-sqrt(2 delta / s^T F s) s``, which puts the quadratic model of the KL on the boundary;
4. a backtracking line search over ``ratio^k`` times the full step (k = 0..max_steps-1) that accepts the first
   step whose *exact* KL is at most ``delta`` and whose loss is lower than before; if none does, ``theta`` is
   left unchanged.

The functions here are pure and generic (closures over parameters, flat vectors); :func:`meta_trpo_objectives`
builds the surrogate and KL closures of a :class:`~intersection_meta.meta.learners.MetaLearner` from a meta-batch.

References:
    Schulman, Levine, Moritz, Jordan & Abbeel 2015, "Trust Region Policy Optimization", ICML.
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import kl_divergence

#: ``() -> scalar`` evaluated at the live parameters.
Objective = Callable[[], Tensor]


@dataclass(frozen=True)
class TRPOConfig:
    """Hyper-parameters of the TRPO step (defaults: pytorch-maml-rl's MAML-TRPO, except ``damping``).

    Attributes:
        max_kl: Trust-region radius ``delta`` (mean KL per state).
        cg_iters: Conjugate-gradient iterations.
        damping: ``F + damping * I`` is inverted (keeps CG stable where the KL is flat).
        backtrack_ratio: Each line-search trial shrinks the step by this factor.
        max_backtracks: Line-search trials before the step is rejected.
    """

    max_kl: float = 0.01
    cg_iters: int = 10
    damping: float = 0.01
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15

    def __post_init__(self) -> None:
        if not self.max_kl > 0:
            raise ValueError(f"max_kl must be positive, got {self.max_kl}")
        if self.cg_iters < 1:
            raise ValueError(f"cg_iters must be >= 1, got {self.cg_iters}")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")
        if not 0 < self.backtrack_ratio < 1:
            raise ValueError(f"backtrack_ratio must be in (0, 1), got {self.backtrack_ratio}")
        if self.max_backtracks < 1:
            raise ValueError(f"max_backtracks must be >= 1, got {self.max_backtracks}")


def flat(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(
    output: Tensor, params: Sequence[Tensor], create_graph: bool = False, retain_graph: bool | None = None
) -> Tensor:
    """``d output / d params`` as one flat vector (zeros for parameters the output does not depend on)."""
    grads = torch.autograd.grad(
        output, list(params), create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return flat([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)])


@torch.no_grad()
def set_flat(params: Sequence[Tensor], vector: Tensor) -> None:
    """Copy the flat ``vector`` into ``params`` in place (the inverse of :func:`flat`)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(vector[offset : offset + n].view_as(p))
        offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters {offset}")


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximate ``A^-1 b`` for a symmetric positive-definite ``A`` given only ``v -> A v``.

    Exact after ``n`` iterations for an ``n``-dimensional ``A`` (in exact arithmetic); stops early when the
    squared residual falls below ``residual_tol``.

    >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> conjugate_gradient(lambda v: a @ v, torch.tensor([1.0, 2.0], dtype=torch.float64), iters=2).tolist()
    [0.09090909090909091, 0.6363636363636364]
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def kl_hessian_vector_product(
    kl_fn: Objective, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v -> (d^2 KL / d params^2) v + damping * v`` at the live parameters, by double backpropagation.

    ``kl_fn`` is evaluated once; its gradient graph is kept and reused for every product (Pearlmutter's trick).
    When ``kl_fn`` goes through a differentiable inner loop, the product includes the inner loop's
    second-order terms.
    """
    grad_kl = flat_grad(kl_fn(), params, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        hv = flat_grad(grad_kl @ v.detach(), params, retain_graph=True)
        return hv + damping * v

    return hvp


@dataclass(frozen=True)
class TRPOStepInfo:
    """What one TRPO step did.

    Attributes:
        loss_before: Loss at the start.
        loss_after: Loss at the accepted parameters (= ``loss_before`` if rejected).
        kl: Exact mean KL at the accepted parameters (0 if rejected).
        step_fraction: Fraction of the full step that was accepted (0 = rejected).
        backtracks: Line-search trials used.
        full_step_norm: Euclidean norm of the full step.
    """

    loss_before: float
    loss_after: float
    kl: float
    step_fraction: float
    backtracks: int
    full_step_norm: float


def line_search(
    params: Sequence[Tensor],
    start: Tensor,
    full_step: Tensor,
    loss_fn: Objective,
    kl_fn: Objective,
    loss_before: float,
    config: TRPOConfig,
) -> tuple[float, float, float, int]:
    """Backtrack from ``start + full_step``: accept the first ``start + ratio^k full_step`` with
    ``KL <= max_kl`` and ``loss < loss_before``; restore ``start`` if none qualifies.

    Returns:
        ``(step_fraction, loss, kl, trials)`` of the accepted step (``(0, loss_before, 0, trials)`` if
        rejected). The parameters are left at the accepted point.
    """
    fraction = 1.0
    for trial in range(1, config.max_backtracks + 1):
        set_flat(params, start + fraction * full_step)
        with torch.no_grad():
            loss, kl = float(loss_fn()), float(kl_fn())
        if math.isfinite(loss) and math.isfinite(kl) and kl <= config.max_kl and loss < loss_before:
            return fraction, loss, kl, trial
        fraction *= config.backtrack_ratio
    set_flat(params, start)
    return 0.0, loss_before, 0.0, config.max_backtracks


def trpo_step(params: Sequence[Tensor], loss_fn: Objective, kl_fn: Objective, config: TRPOConfig) -> TRPOStepInfo:
    """One TRPO update of ``params`` in place: natural-gradient direction by CG, scaled to the trust region,
    then :func:`line_search`.

    Args:
        params: The parameters to update (leaf tensors that require grad, e.g. ``nn.Parameter``).
        loss_fn: Loss to decrease (e.g. minus the importance-weighted surrogate), read at the live parameters.
        kl_fn: Mean KL between the policy at the starting parameters and at the live ones (0 at the start).
        config: Step hyper-parameters.
    """
    params = list(params)
    start = flat([p.detach() for p in params]).clone()
    loss = loss_fn()
    loss_before = loss.item()
    grad = flat_grad(loss, params)
    hvp = kl_hessian_vector_product(kl_fn, params, config.damping)
    direction = conjugate_gradient(hvp, grad, iters=config.cg_iters)
    curvature = float(direction @ hvp(direction))
    if not math.isfinite(curvature) or curvature <= 0 or not torch.isfinite(direction).all():
        return TRPOStepInfo(loss_before, loss_before, 0.0, 0.0, 0, 0.0)
    full_step = -math.sqrt(2.0 * config.max_kl / curvature) * direction
    fraction, loss_after, kl, trials = line_search(
        params, start, full_step, loss_fn, kl_fn, loss_before, config
    )
    return TRPOStepInfo(loss_before, loss_after, kl, fraction, trials, float(full_step.norm()))


# -- meta-learning objectives ---------------------------------------------------------------------------------------
def meta_trpo_objectives(learner: Any, task_batches: Sequence[tuple[Any, Any]]) -> tuple[Objective, Objective]:
    """The surrogate loss and KL closures of MAML-TRPO for a meta-batch ``[(inner_i, outer_i)]``.

    For every task, the adapted parameters ``theta_i'(theta) = learner.adapt(theta, inner_i)`` are recomputed at
    the live ``theta`` (differentiably: second order unless the learner is first order). The loss is
    ``-1/N sum_i mean_t [ratio_t A_t] - entropy_coef * entropy`` over the outer episodes, with
    ``ratio = pi_{theta_i'}(a|s) / pi_old(a|s)`` and advantages from the learner's estimator
    (:func:`intersection_meta.pg.compute_advantages`); the KL is the mean over tasks of the masked mean
    ``KL(pi_old(.|s) || pi_{theta_i'}(.|s))`` on the outer observations. ``pi_old`` is frozen at the ``theta`` of
    this call. A multitask learner has no inner loop: both batches of a task are outer data for ``theta``.
    """
    from intersection_meta.pg import compute_advantages, masked_mean

    policy, pg = learner.policy, learner.pg
    if learner.spec.multitask:
        items = [(None, episodes) for pair in task_batches for episodes in pair]
    else:
        items = list(task_batches)

    def adapted(inner: Any) -> dict[str, Tensor]:
        theta = learner.params()
        return dict(theta) if inner is None else learner.adapt(theta, inner, differentiable=True)

    frozen = []  # (inner, outer, advantages, old distribution, old log-probabilities) per item
    with torch.no_grad():
        for inner, outer in items:
            adv = compute_advantages(outer, pg)
            old_dist = policy.distribution(outer.obs, adapted_no_grad(learner, inner))
            frozen.append((inner, outer, adv, old_dist, old_dist.log_prob(outer.actions)))

    def loss_fn() -> Tensor:
        losses = []
        for inner, outer, adv, _, old_logp in frozen:
            dist = policy.distribution(outer.obs, adapted(inner))
            ratio = torch.exp(dist.log_prob(outer.actions) - old_logp)
            loss = -masked_mean(ratio * adv, outer.mask)
            if pg.entropy_coef:
                loss = loss - pg.entropy_coef * masked_mean(dist.entropy(), outer.mask)
            losses.append(loss)
        return torch.stack(losses).mean()

    def kl_fn() -> Tensor:
        kls = []
        for inner, outer, _, old_dist, _ in frozen:
            dist = policy.distribution(outer.obs, adapted(inner))
            kls.append(masked_mean(kl_divergence(old_dist, dist), outer.mask))
        return torch.stack(kls).mean()

    return loss_fn, kl_fn


def adapted_no_grad(learner: Any, inner: Any) -> dict[str, Tensor]:
    """``theta_i'`` at the live ``theta`` without autograd history (``theta`` itself when ``inner`` is None)."""
    theta = learner.params()
    if inner is None:
        return {k: v.detach() for k, v in theta.items()}
    return learner.adapt(theta, inner, differentiable=False)


def meta_trpo_step(learner: Any, task_batches: Sequence[tuple[Any, Any]], config: TRPOConfig) -> TRPOStepInfo:
    """One MAML-TRPO outer step on ``learner.meta_parameters()`` (policy weights, plus Meta-SGD's step sizes)."""
    loss_fn, kl_fn = meta_trpo_objectives(learner, task_batches)
    return trpo_step(learner.meta_parameters(), loss_fn, kl_fn, config)
