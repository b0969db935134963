"""Meta-learners: MAML, FOMAML, Meta-SGD and their Directed-* variants behind one protocol.

Notation: ``theta`` are the policy's (meta-)parameters, ``L_i^in`` / ``L_i^out`` the inner / outer loss of
task ``i`` (by default the policy-gradient surrogate of :func:`intersection_meta.pg.policy_loss` on that
task's episodes), ``alpha`` the inner step size and ``K`` the number of inner steps.

Inner loop (every algorithm)::

    theta_i^0 = theta,   theta_i^{k+1} = theta_i^k - alpha (.) grad L_i^in(theta_i^k)   (k < K)

Outer loss::

    L_meta = 1/N sum_i L_i^out(theta_i^K)

The data contract: the learner never samples. Inner episodes of task ``i`` are collected by the trainer with
``theta`` (before adaptation); outer episodes with the adapted parameters ``adapt(theta, inner_i,
differentiable=False)``. The learner only turns episodes into adapted parameters and losses.

One trainer iteration, for every algorithm::

    learner = make_learner(algo, policy, MetaConfig(...))
    optimizer = torch.optim.Adam(learner.meta_parameters(), lr=...)
    if learner.config.directed:                                     # Directed-* only
        medium_in = collect(medium_task, learner.params())
        medium_out = collect(medium_task, learner.adapt(learner.params(), medium_in, differentiable=False))
        learner.directed_update(medium_in, medium_out, iteration=it)  # in place on the policy (no_grad)
    theta = learner.params()
    batches = []
    for task in tasks:
        inner = collect(task, theta)
        outer = collect(task, learner.adapt(theta, inner, differentiable=False))
        batches.append((inner, outer))
    optimizer.zero_grad()
    loss, info = learner.outer_loss(theta, batches)
    loss.backward()
    optimizer.step()

(``medium_out`` is only needed for ``directed_mode="fomaml"``.)

Known simplification, shared with the MAML-RL paper and pytorch-maml-rl: the gradient of the outer loss
ignores the dependence of the inner-loop sampling distribution on ``theta`` (see ProMP, Rothfuss et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from intersection_meta.networks import Params, params_of
from intersection_meta.pg import policy_loss

#: ``loss_fn(params, episodes) -> scalar``; ``episodes`` is opaque to the learner (``Episodes`` by default).
LossFn = Callable[[Mapping[str, Tensor], Any], Tensor]

DIRECTED_MODES: tuple[str, ...] = ("pg", "fomaml")


@dataclass(frozen=True)
class MetaConfig:
    """Hyper-parameters of the meta-learners. Algorithm flags are set by :func:`make_learner` from the name.

    Attributes:
        inner_lr: Inner (adaptation) SGD step size ``alpha``; Meta-SGD's initial per-parameter step size.
        inner_steps: Number ``K`` of inner policy-gradient steps.
        first_order: Treat inner gradients as constants (FOMAML).
        learn_inner_lr: Meta-learn a per-parameter step-size tensor (Meta-SGD).
        directed: Take the directed step on the medium task before each meta-update (Directed-*).
        directed_lr: Step size ``beta_0`` of the directed step.
        directed_lr_decay: ``beta_k = beta_0 * directed_lr_decay ** k`` at iteration ``k`` (1.0 = constant).
        directed_mode: ``"pg"``: plain policy-gradient step on medium-task episodes collected with ``theta``;
            ``"fomaml"``: adapt on the medium task, then apply the gradient of the post-adaptation loss
            w.r.t. the adapted parameters to ``theta`` (first order; needs post-adaptation episodes).
        gamma: Discount factor.
        gae_lambda: GAE lambda (1.0 = Monte-Carlo returns minus baseline, as in the MAML paper).
        baseline_reg: Ridge regularisation of the linear feature baseline.
        normalize_advantages: Normalise advantages per task (masked mean / std).
        entropy_coef: Weight of the policy-entropy bonus in the default loss (0 = plain REINFORCE).
        bootstrap_truncated: Bootstrap truncated episodes with the baseline value of their last observation
            (gymnasium semantics); False treats the time limit as the end of a finite-horizon task.
    """

    inner_lr: float = 0.1
    inner_steps: int = 1
    first_order: bool = False
    learn_inner_lr: bool = False
    directed: bool = False
    directed_lr: float = 0.1
    directed_lr_decay: float = 1.0
    directed_mode: Literal["pg", "fomaml"] = "pg"
    gamma: float = 0.99
    gae_lambda: float = 1.0
    baseline_reg: float = 1e-5
    normalize_advantages: bool = True
    entropy_coef: float = 0.0
    bootstrap_truncated: bool = True

    def __post_init__(self) -> None:
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.directed_mode not in DIRECTED_MODES:
            raise ValueError(f"unknown directed_mode {self.directed_mode!r}; allowed: {list(DIRECTED_MODES)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.directed_lr_decay <= 0.0:
            raise ValueError(f"directed_lr_decay must be positive, got {self.directed_lr_decay}")
        if self.baseline_reg < 0.0:
            raise ValueError(f"baseline_reg must be >= 0, got {self.baseline_reg}")


@dataclass(frozen=True)
class AlgorithmSpec:
    """How an algorithm name maps onto the learner's flags, with its update equation and references."""

    first_order: bool
    learn_inner_lr: bool
    directed: bool
    doc: str = field(repr=False)


_MAML_DOC = (
    "MAML (Finn, Abbeel & Levine 2017, 'Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks', "
    "ICML): theta <- theta - eta * grad_theta 1/N sum_i L_i^out(theta_i^K(theta)); the outer gradient flows "
    "through the K inner steps (second order)."
)
_FOMAML_DOC = (
    "First-order MAML (Finn et al. 2017; Nichol, Achiam & Schulman 2018, 'On First-Order Meta-Learning "
    "Algorithms'): MAML with the inner gradients treated as constants, so the meta-gradient is "
    "1/N sum_i grad L_i^out evaluated at theta_i^K."
)
_META_SGD_DOC = (
    "Meta-SGD (Li, Zhou, Chen & Li 2017, 'Meta-SGD: Learning to Learn Quickly for Few-Shot Learning'): MAML "
    "with a per-parameter step size alpha (a tensor shaped like each parameter, initialised at inner_lr), "
    "meta-learned with theta: theta_i' = theta - alpha (.) grad L_i^in(theta), and "
    "(theta, alpha) <- (theta, alpha) - eta * grad_(theta, alpha) 1/N sum_i L_i^out(theta_i')."
)
_DIRECTED_DOC = (
    "Directed step (Zhang, Yan & Liu 2025, 'Directed-MAML', arXiv:2510.00212): before each meta-update, a "
    "first-order step on the scenario's medium task, theta <- theta - beta_k * g_medium (see "
    "MetaConfig.directed_mode); the trainer then samples the meta-batch with the directed theta and runs "
    "the meta-update from it."
)

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "maml": AlgorithmSpec(first_order=False, learn_inner_lr=False, directed=False, doc=_MAML_DOC),
    "fomaml": AlgorithmSpec(first_order=True, learn_inner_lr=False, directed=False, doc=_FOMAML_DOC),
    "meta_sgd": AlgorithmSpec(first_order=False, learn_inner_lr=True, directed=False, doc=_META_SGD_DOC),
    "directed_maml": AlgorithmSpec(
        first_order=False, learn_inner_lr=False, directed=True, doc=f"{_DIRECTED_DOC} Then: {_MAML_DOC}"
    ),
    "directed_fomaml": AlgorithmSpec(
        first_order=True, learn_inner_lr=False, directed=True, doc=f"{_DIRECTED_DOC} Then: {_FOMAML_DOC}"
    ),
    "directed_meta_sgd": AlgorithmSpec(
        first_order=False, learn_inner_lr=True, directed=True, doc=f"{_DIRECTED_DOC} Then: {_META_SGD_DOC}"
    ),
}


def sgd_step(
    params: Mapping[str, Tensor],
    loss: Tensor,
    step_sizes: float | Mapping[str, Tensor],
    create_graph: bool,
) -> Params:
    """One (functional) gradient step ``theta' = theta - alpha (.) grad loss(theta)`` returning new tensors.

    Args:
        params: Parameters the loss was computed from (they must require grad).
        loss: Scalar loss.
        step_sizes: A scalar ``alpha`` or per-parameter tensors (Meta-SGD), keyed like ``params``.
        create_graph: Keep the graph of the gradient so second-order terms can flow (MAML); with False the
            gradient is a constant, but ``theta'`` still depends on ``theta`` (identity) and on ``alpha``.

    Returns:
        New parameter dict; parameters the loss does not depend on are shifted by zero.
    """
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    new: Params = {}
    for name, grad in zip(names, grads, strict=False):
        if grad is None:
            new[name] = params[name]
            continue
        alpha = step_sizes[name] if isinstance(step_sizes, Mapping) else step_sizes
        new[name] = params[name] - alpha * grad
    return new


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


class MetaLearner:
    """Gradient-based meta-learner covering MAML, FOMAML, Meta-SGD and Directed-* (see :data:`ALGORITHMS`).

    Build it with :func:`make_learner`. The policy module holds ``theta``; Meta-SGD's step sizes live in
    ``self.step_sizes`` (a dict of ``nn.Parameter`` shaped like each policy parameter, or None).

    Args:
        policy: The policy ``nn.Module`` (``theta`` = its parameters).
        config: Hyper-parameters.
        loss_fn: ``loss_fn(params, episodes) -> scalar`` used for inner, outer and directed losses. Default:
            the policy-gradient surrogate :func:`intersection_meta.pg.policy_loss` with the config's
            ``gamma``, ``gae_lambda``, ``baseline_reg`` and ``normalize_advantages``.
        name: Algorithm name, for ``state_dict`` and messages.
    """

    def __init__(
        self, policy: nn.Module, config: MetaConfig, loss_fn: LossFn | None = None, name: str = "custom"
    ) -> None:
        self.policy = policy
        self.config = config
        self.name = name
        self.loss_fn: LossFn = loss_fn or partial(  # loss_fn(params, episodes)
            policy_loss,
            policy,
            gamma=config.gamma,
            lam=config.gae_lambda,
            baseline_reg=config.baseline_reg,
            normalize=config.normalize_advantages,
            entropy_coef=config.entropy_coef,
            bootstrap_truncated=config.bootstrap_truncated,
        )
        self.step_sizes: dict[str, nn.Parameter] | None = None
        if config.learn_inner_lr:
            self.step_sizes = {
                n: nn.Parameter(torch.full_like(p.detach(), config.inner_lr)) for n, p in policy.named_parameters()
            }

    # -- parameters ---------------------------------------------------------------------------------------
    def params(self) -> Params:
        """Current ``theta`` (the policy's live parameters)."""
        return params_of(self.policy)

    def meta_parameters(self) -> list[Tensor]:
        """Everything the outer optimiser updates: ``theta``, plus the step sizes for Meta-SGD."""
        extra = list(self.step_sizes.values()) if self.step_sizes is not None else []
        return list(self.policy.parameters()) + extra

    def inner_step_sizes(self) -> float | dict[str, Tensor]:
        """``alpha``: the scalar ``inner_lr``, or Meta-SGD's per-parameter tensors."""
        return self.step_sizes if self.step_sizes is not None else self.config.inner_lr

    # -- inner loop -----------------------------------------------------------------------------------------
    def adapt(
        self,
        params: Mapping[str, Tensor],
        inner_episodes: Any,
        steps: int | None = None,
        *,
        differentiable: bool = True,
    ) -> Params:
        """``K`` inner steps ``theta^{k+1} = theta^k - alpha (.) grad L^in(theta^k)`` on ``inner_episodes``.

        The same episodes (collected with the pre-adaptation parameters) are reused for every step.
        The input tensors are never modified.

        Args:
            params: Starting parameters (usually :meth:`params`).
            inner_episodes: Data for ``loss_fn``.
            steps: Number of steps (default ``config.inner_steps``).
            differentiable: True: the result stays in the autograd graph of ``params`` (and of Meta-SGD's step
                sizes); second-order unless ``config.first_order``. False: detached tensors, for sampling
                outer episodes or evaluation.

        Returns:
            Adapted parameters (new tensors).
        """
        steps = self.config.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        alpha = self.inner_step_sizes()
        if not differentiable:
            alpha = _detached(alpha) if isinstance(alpha, Mapping) else alpha
            current = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            for _ in range(steps):
                with torch.enable_grad():
                    current = sgd_step(current, self.loss_fn(current, inner_episodes), alpha, create_graph=False)
                current = {k: v.detach().requires_grad_(True) for k, v in current.items()}
            return _detached(current)
        current = dict(params)
        with torch.enable_grad():
            for _ in range(steps):
                loss = self.loss_fn(current, inner_episodes)
                current = sgd_step(current, loss, alpha, create_graph=not self.config.first_order)
        return current

    # -- outer loss -----------------------------------------------------------------------------------------
    def outer_loss(
        self, params: Mapping[str, Tensor], task_batches: Sequence[tuple[Any, Any]]
    ) -> tuple[Tensor, dict[str, float]]:
        """Meta-loss ``1/N sum_i L_i^out(adapt(params, inner_i))`` over ``task_batches = [(inner_i,
        outer_i)]``.

        Call ``backward()`` on the returned loss to get the meta-gradient in ``.grad`` of
        :meth:`meta_parameters` (when ``params`` is :meth:`params`).

        Returns:
            ``(loss, info)`` with ``info``: ``inner_loss`` (mean pre-adaptation loss), ``outer_loss``, and
            ``outer_loss_task_<i>`` per task (floats).
        """
        if not task_batches:
            raise ValueError("outer_loss needs at least one (inner, outer) task batch")
        outer_losses, inner_losses = [], []
        for inner, outer in task_batches:
            with torch.no_grad():
                inner_losses.append(self.loss_fn(params, inner).item())
            adapted = self.adapt(params, inner, differentiable=True)
            outer_losses.append(self.loss_fn(adapted, outer))
        loss = torch.stack(outer_losses).mean()
        info = {"inner_loss": sum(inner_losses) / len(inner_losses), "outer_loss": loss.item()}
        info.update({f"outer_loss_task_{i}": v.item() for i, v in enumerate(outer_losses)})
        return loss, info

    # -- directed step ---------------------------------------------------------------------------------------
    def directed_lr(self, iteration: int) -> float:
        """``beta_k = directed_lr * directed_lr_decay ** k``."""
        return self.config.directed_lr * self.config.directed_lr_decay ** int(iteration)

    def directed_step(
        self,
        params: Mapping[str, Tensor],
        medium_inner_episodes: Any,
        medium_outer_episodes: Any = None,
        *,
        iteration: int = 0,
    ) -> Params:
        """Directed parameters ``theta - beta_k * g_medium`` as new detached tensors (pure; see
        :meth:`directed_update` for the in-place version the trainer uses).

        ``directed_mode="pg"``: ``g = grad L_medium(theta)`` on ``medium_inner_episodes`` (collected with
        theta).
        ``directed_mode="fomaml"``: ``theta' = adapt(theta, medium_inner_episodes)`` (first order),
        ``g = grad_{theta'} L_medium(theta')`` on ``medium_outer_episodes`` (collected with ``theta'``).

        Raises:
            ValueError: in fomaml mode without ``medium_outer_episodes``.
        """
        beta = self.directed_lr(iteration)
        start = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            if self.config.directed_mode == "pg":
                loss = self.loss_fn(start, medium_inner_episodes)
                grads = torch.autograd.grad(loss, list(start.values()), allow_unused=True)
            else:
                if medium_outer_episodes is None:
                    raise ValueError(
                        "directed_mode='fomaml' needs medium_outer_episodes collected with the adapted "
                        "parameters adapt(theta, medium_inner_episodes, differentiable=False)"
                    )
                adapted = self.adapt(start, medium_inner_episodes, differentiable=False)
                adapted = {k: v.requires_grad_(True) for k, v in adapted.items()}
                loss = self.loss_fn(adapted, medium_outer_episodes)
                grads = torch.autograd.grad(loss, list(adapted.values()), allow_unused=True)
        return {
            name: (p.detach() if g is None else (p - beta * g).detach())
            for (name, p), g in zip(start.items(), grads, strict=False)
        }

    @torch.no_grad()
    def directed_update(
        self, medium_inner_episodes: Any, medium_outer_episodes: Any = None, *, iteration: int = 0
    ) -> dict[str, float]:
        """Apply :meth:`directed_step` to the policy's parameters **in place** (no autograd history), so the
        outer optimiser keeps tracking the same ``nn.Parameter`` objects.

        Returns:
            ``{"directed_lr": beta_k, "directed_step_norm": ||theta_new - theta||}``.
        """
        live = self.params()
        new = self.directed_step(live, medium_inner_episodes, medium_outer_episodes, iteration=iteration)
        sq = 0.0
        for name, p in live.items():
            sq += float(((new[name] - p) ** 2).sum())
            p.copy_(new[name])
        return {"directed_lr": self.directed_lr(iteration), "directed_step_norm": sq**0.5}

    # -- checkpointing ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Learner-owned state (the policy's weights are checkpointed through ``policy.state_dict()``)."""
        return {
            "name": self.name,
            "config": asdict(self.config),
            "step_sizes": None
            if self.step_sizes is None
            else {k: v.detach().clone() for k, v in self.step_sizes.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore Meta-SGD step sizes (in place, so optimisers keep their references).

        Raises:
            ValueError: if the state's step sizes do not match this learner's.
        """
        saved = state.get("step_sizes")
        if (saved is None) != (self.step_sizes is None):
            raise ValueError(
                f"step sizes mismatch: checkpoint has {'none' if saved is None else 'some'}, learner "
                f"{self.name!r} has {'none' if self.step_sizes is None else 'some'}"
            )
        if saved is None:
            return
        if set(saved) != set(self.step_sizes):
            raise ValueError(f"step-size names differ: {sorted(saved)} vs {sorted(self.step_sizes)}")
        with torch.no_grad():
            for k, v in saved.items():
                if v.shape != self.step_sizes[k].shape:
                    raise ValueError(f"step size {k!r}: shape {tuple(v.shape)} vs {tuple(self.step_sizes[k].shape)}")
                self.step_sizes[k].copy_(v)


def make_learner(
    name: str, policy: nn.Module, config: MetaConfig | None = None, loss_fn: LossFn | None = None
) -> MetaLearner:
    """Build the learner ``name`` (one of :data:`ALGORITHMS`); the name sets ``first_order``,
    ``learn_inner_lr`` and ``directed`` in the config, every other field is kept.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown meta-learner {name!r}; valid: {', '.join(ALGORITHMS)}")
    spec = ALGORITHMS[name]
    config = replace(
        config or MetaConfig(),
        first_order=spec.first_order,
        learn_inner_lr=spec.learn_inner_lr,
        directed=spec.directed,
    )
    return MetaLearner(policy, config, loss_fn=loss_fn, name=name)
