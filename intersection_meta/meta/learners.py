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

    learner = MetaLearner(policy, config.meta, config.pg)           # the run config's sections, unchanged
    optimizer = torch.optim.Adam(learner.meta_parameters(), lr=...)
    if learner.directed is not None:                                # Directed-* only
        medium_in = collect(medium_task, learner.params())
        medium_out = None
        if learner.directed.adapt_first:                            # directed_mode "fomaml"
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

The algorithm name selects an :class:`~intersection_meta.registry.AlgorithmSpec` (first order or not, learned
step sizes or not, directed or not) and the directed mode a :class:`~intersection_meta.registry.DirectedModeSpec`;
both tables live in :mod:`intersection_meta.registry`.

Latent policies (``policy.latent_dim > 0``, MAESN: Gupta, Mendonca, Liu, Abbeel & Levine 2018, "Meta-Reinforcement
Learning of Structured Exploration Strategies"): the inner loss is the latent's REINFORCE term alone
(:func:`intersection_meta.pg.latent_adaptation_loss`), so adaptation moves only the task's latent distribution
``(mu, sigma)``, with step sizes ``meta.latent_lr`` and ``meta.latent_sigma_lr``; the outer loss adds
``meta.latent_kl * KL(N(mu, sigma) || N(0, I))`` at ``theta`` (MAESN's prior term).

Known simplification, shared with the MAML-RL paper and pytorch-maml-rl: with the default inner estimator the
gradient of the outer loss ignores the dependence of the inner-loop sampling distribution on ``theta``.
``meta.inner_estimator="lvc"`` uses ProMP's low-variance curvature surrogate as the inner loss (Rothfuss et al.
2019), whose Hessian carries that dependence into the second-order meta-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from intersection_meta.config import MetaConfig, PGConfig
from intersection_meta.networks import Params, latent_kl_to_prior, params_of
from intersection_meta.pg import latent_adaptation_loss, policy_loss
from intersection_meta.registry import ALGORITHMS, DIRECTED_MODES, AlgorithmSpec, DirectedModeSpec

#: ``loss_fn(params, episodes) -> scalar``; ``episodes`` is opaque to the learner (``Episodes`` by default).
LossFn = Callable[[Mapping[str, Tensor], Any], Tensor]


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


def inner_pg(pg: PGConfig, meta: MetaConfig) -> PGConfig:
    """The ``pg`` section the inner (adaptation) loss uses: ``pg`` with ``meta.inner_advantages`` applied.

    >>> inner_pg(PGConfig(normalize_advantages=False), MetaConfig(inner_advantages="normalized")).normalize_advantages
    True
    """
    if meta.inner_advantages == "pg":
        return pg
    return replace(pg, normalize_advantages=meta.inner_advantages == "normalized")


def per_step_batches(inner_episodes: Any, steps: int) -> list[Any]:
    """The batch of each of ``steps`` inner steps: ``inner_episodes`` itself for every step, or, for a ``list``, its
    elements in order (one per step; ``Episodes`` is a tuple, never a list).

    Raises:
        ValueError: if a list's length differs from ``steps``.
    """
    if isinstance(inner_episodes, list):
        if len(inner_episodes) != steps:
            raise ValueError(f"{len(inner_episodes)} inner batches for {steps} inner steps; give one per step")
        return inner_episodes
    return [inner_episodes] * steps


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


class MetaLearner:
    """Gradient-based meta-learner covering MAML, FOMAML, Meta-SGD and Directed-* (see
    :data:`intersection_meta.registry.ALGORITHMS`).

    Build it from the run config's sections: ``MetaLearner(policy, config.meta, config.pg)``. The policy module
    holds ``theta``; Meta-SGD's step sizes live in ``self.step_sizes`` (a dict of ``nn.Parameter`` shaped like
    each policy parameter, or None).

    Args:
        policy: The policy ``nn.Module`` (``theta`` = its parameters).
        meta: The run config's ``meta`` section (``algo`` selects the update rule).
        pg: The run config's ``pg`` section, handed to the default loss unchanged.
        loss_fn: ``loss_fn(params, episodes) -> scalar`` used for inner, outer and directed losses. Default:
            the policy-gradient surrogate :func:`intersection_meta.pg.policy_loss` with ``pg``; the inner loss
            (:attr:`inner_loss_fn`) then applies ``meta.inner_estimator`` and ``meta.inner_advantages``.

    Raises:
        ValueError: if a custom ``loss_fn`` is given with a non-default ``meta.inner_estimator`` or
            ``meta.inner_advantages`` (they configure the default loss only).

    Attributes:
        spec: The algorithm's flags (``first_order``, ``learn_inner_lr``, ``directed``).
        directed: The directed-step mode, or None for algorithms without the directed step.
    """

    def __init__(
        self, policy: nn.Module, meta: MetaConfig, pg: PGConfig | None = None, loss_fn: LossFn | None = None
    ) -> None:
        self.policy = policy
        self.meta = meta
        self.name = meta.algo
        self.spec: AlgorithmSpec = ALGORITHMS[meta.algo]
        self.directed: DirectedModeSpec | None = DIRECTED_MODES[meta.directed_mode] if self.spec.directed else None
        self.pg = pg or PGConfig()
        self.loss_fn: LossFn = loss_fn or partial(policy_loss, policy, pg=self.pg)  # (params, episodes)
        if loss_fn is not None and (meta.inner_estimator != "reinforce" or meta.inner_advantages != "pg"):
            raise ValueError(
                "meta.inner_estimator and meta.inner_advantages configure the default policy-gradient loss; "
                "with a custom loss_fn leave them at 'reinforce' and 'pg'"
            )
        #: Size of the policy's per-episode latent (0: none; module docstring).
        self.latent_dim = int(getattr(policy, "latent_dim", 0))
        #: The adaptation loss (:meth:`adapt`): ``loss_fn`` unless the inner estimator or advantages differ; the
        #: latent's REINFORCE term for a latent policy.
        self.inner_loss_fn: LossFn = loss_fn or (
            partial(latent_adaptation_loss, policy)
            if self.latent_dim
            else partial(policy_loss, policy, pg=inner_pg(self.pg, meta), surrogate=meta.inner_estimator)
        )
        #: A latent policy's fixed per-parameter step sizes (built once: :meth:`adapt` runs per task and iteration).
        self._latent_step_sizes: dict[str, Tensor] | None = (
            {n: torch.tensor(self._initial_step_size(n)) for n, _ in policy.named_parameters()}
            if self.latent_dim
            else None
        )
        self.step_sizes: dict[str, nn.Parameter] | None = None
        if self.spec.learn_inner_lr:
            self.step_sizes = {
                n: nn.Parameter(torch.full_like(p.detach(), self._initial_step_size(n)))
                for n, p in policy.named_parameters()
            }

    # -- parameters ---------------------------------------------------------------------------------------
    def params(self) -> Params:
        """Current ``theta`` (the policy's live parameters)."""
        return params_of(self.policy)

    def meta_parameters(self) -> list[Tensor]:
        """Everything the outer optimiser updates: ``theta``, plus the step sizes for Meta-SGD."""
        extra = list(self.step_sizes.values()) if self.step_sizes is not None else []
        return list(self.policy.parameters()) + extra

    def _initial_step_size(self, name: str) -> float:
        """A parameter's inner step size: ``latent_lr`` / ``latent_sigma_lr`` for a latent policy's ``latent_mu`` /
        ``latent_logstd``, ``inner_lr`` for everything else (Meta-SGD's initial values)."""
        if self.latent_dim and name == "latent_mu":
            return self.meta.latent_lr
        if self.latent_dim and name == "latent_logstd":
            return self.meta.latent_sigma_lr
        return self.meta.inner_lr

    def inner_step_sizes(self) -> float | dict[str, Tensor]:
        """``alpha``: the scalar ``inner_lr``, or Meta-SGD's per-parameter tensors; for a latent policy, per
        parameter (:meth:`_initial_step_size`)."""
        if self.step_sizes is not None:
            return self.step_sizes
        if self._latent_step_sizes is not None:
            return self._latent_step_sizes
        return self.meta.inner_lr

    def prior_loss(self, params: Mapping[str, Tensor]) -> Tensor | None:
        """``meta.latent_kl * KL(N(mu, sigma) || N(0, I))`` at ``params`` for a latent policy, else None."""
        if not self.latent_dim or not self.meta.latent_kl:
            return None
        return self.meta.latent_kl * latent_kl_to_prior(params["latent_mu"], params["latent_logstd"])

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

        ``inner_episodes`` is either one batch, reused for every step, or a ``list`` of ``K`` batches, one per step
        (batch ``k`` collected with ``theta^k``: the MAML-RL paper's multi-step adaptation, which the trainer uses
        for ``meta.inner_steps > 1``). The input tensors are never modified.

        Args:
            params: Starting parameters (usually :meth:`params`).
            inner_episodes: Data for ``loss_fn``: one batch, or a ``list`` with one batch per step.
            steps: Number of steps (default ``meta.inner_steps``; for a list, its length must match).
            differentiable: True: the result stays in the autograd graph of ``params`` (and of Meta-SGD's step
                sizes); second-order unless the algorithm is first order. False: detached tensors, for sampling
                outer episodes or evaluation.

        Returns:
            Adapted parameters (new tensors).
        """
        steps = self.meta.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        batches = per_step_batches(inner_episodes, steps)
        alpha = self.inner_step_sizes()
        if not differentiable:
            alpha = _detached(alpha) if isinstance(alpha, Mapping) else alpha
            current = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            for batch in batches:
                with torch.enable_grad():
                    current = sgd_step(current, self.inner_loss_fn(current, batch), alpha, create_graph=False)
                current = {k: v.detach().requires_grad_(True) for k, v in current.items()}
            return _detached(current)
        current = dict(params)
        with torch.enable_grad():
            for batch in batches:
                loss = self.inner_loss_fn(current, batch)
                current = sgd_step(current, loss, alpha, create_graph=not self.spec.first_order)
        return current

    # -- outer loss -----------------------------------------------------------------------------------------
    def outer_loss(
        self, params: Mapping[str, Tensor], task_batches: Sequence[tuple[Any, Any]]
    ) -> tuple[Tensor, dict[str, float]]:
        """Meta-loss ``1/N sum_i L_i^out(adapt(params, inner_i))`` over ``task_batches = [(inner_i,
        outer_i)]``.

        Call ``backward()`` on the returned loss to get the meta-gradient in ``.grad`` of
        :meth:`meta_parameters` (when ``params`` is :meth:`params`).

        The multitask baseline (``spec.multitask``) has no inner loop here: both batches were collected with
        ``theta``, and its loss is ``1/N sum_i 1/2 [L_i(theta; inner_i) + L_i(theta; outer_i)]``. A latent policy's
        loss adds :meth:`prior_loss` at ``params``.

        Returns:
            ``(loss, info)`` with ``info``: ``inner_loss`` (mean pre-adaptation loss), ``outer_loss``, and
            ``outer_loss_task_<i>`` per task (floats).
        """
        if not task_batches:
            raise ValueError("outer_loss needs at least one (inner, outer) task batch")
        outer_losses, inner_losses = [], []
        for inner, outer in task_batches:
            if self.spec.multitask:
                inner_loss = self.loss_fn(params, inner)
                inner_losses.append(inner_loss.item())
                outer_losses.append(0.5 * (inner_loss + self.loss_fn(params, outer)))
                continue
            with torch.no_grad():
                first = inner[0] if isinstance(inner, list) else inner  # collected with params
                inner_losses.append(self.loss_fn(params, first).item())
            adapted = self.adapt(params, inner, differentiable=True)
            outer_losses.append(self.loss_fn(adapted, outer))
        loss = torch.stack(outer_losses).mean()
        prior = self.prior_loss(params)
        if prior is not None:
            loss = loss + prior
        info = {"inner_loss": sum(inner_losses) / len(inner_losses), "outer_loss": loss.item()}
        info.update({f"outer_loss_task_{i}": v.item() for i, v in enumerate(outer_losses)})
        return loss, info

    # -- directed step ---------------------------------------------------------------------------------------
    def directed_lr(self, iteration: int) -> float:
        """``beta_k = directed_lr * directed_lr_decay ** k``."""
        return self.meta.directed_lr * self.meta.directed_lr_decay ** int(iteration)

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

        Without ``adapt_first`` (``directed_mode="pg"``): ``g = grad L_medium(theta)`` on
        ``medium_inner_episodes`` (collected with theta).
        With ``adapt_first`` (``directed_mode="fomaml"``): ``theta' = adapt(theta, medium_inner_episodes)`` (first
        order), ``g = grad_{theta'} L_medium(theta')`` on ``medium_outer_episodes`` (collected with ``theta'``).

        Raises:
            ValueError: for an algorithm without the directed step, or in fomaml mode without
                ``medium_outer_episodes``.
        """
        if self.directed is None:
            raise ValueError(f"{self.name} takes no directed step; use a directed_* algorithm")
        beta = self.directed_lr(iteration)
        start = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            if not self.directed.adapt_first:
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
