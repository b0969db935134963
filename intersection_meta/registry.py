"""The registry: every algorithm, simulator backend and directed-step mode, defined once.

The run config's allowed values, the command lines' ``choices`` and help texts, the learner's flags and every
"unknown name" error read these tables. Adding an algorithm or a backend is one entry here (plus its code).
Pure data: importing this module imports no torch and no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AlgorithmSpec:
    """How an algorithm name maps onto the meta-learner's update rule, with its equation and references.

    Attributes:
        first_order: Treat inner gradients as constants in the meta-gradient (FOMAML).
        learn_inner_lr: Meta-learn a per-parameter inner step-size tensor (Meta-SGD).
        directed: Take the directed step on the scenario's medium task before each meta-update (Directed-*).
        doc: Update equation and references.
        multitask: No inner loop in training (the non-meta baseline): both batches of a task are collected with
            ``theta`` and the outer loss is the plain policy-gradient loss of ``theta`` on both. Evaluation adapts
            it like the meta-learners.
    """

    first_order: bool
    learn_inner_lr: bool
    directed: bool
    doc: str = field(repr=False)
    multitask: bool = False


@dataclass(frozen=True)
class DirectedModeSpec:
    """One way of taking the Directed-* step on the medium task.

    Attributes:
        adapt_first: False: ``g = grad L_medium(theta)`` on episodes collected with ``theta``. True: adapt on
            those episodes first, ``theta' = adapt(theta)``, and take ``g = grad_theta' L_medium(theta')`` on
            episodes collected with ``theta'`` (first order), so the trainer samples the medium task twice.
        doc: One-line description.
    """

    adapt_first: bool
    doc: str


@dataclass(frozen=True)
class BackendSpec:
    """A simulator choice for vector envs. ``auto`` is resolved per task by ``envs.factory.resolve_backend``."""

    concrete: bool
    doc: str


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
    "meta.directed_mode); the trainer then samples the meta-batch with the directed theta and runs "
    "the meta-update from it."
)
_MULTITASK_DOC = (
    "Multitask policy gradient (the 'pretrained' baseline of Finn et al. 2017): no inner loop in training; "
    "theta <- theta - eta * grad_theta 1/N sum_i 1/2 [L_i(theta; batch 1) + L_i(theta; batch 2)] on episodes of "
    "every task collected with theta (the same sample budget as the meta-learners). It is evaluated with the "
    "same inner steps as they are."
)

#: Meta-learning algorithms by name (the run config's ``meta.algo``).
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
    "multitask": AlgorithmSpec(
        first_order=True, learn_inner_lr=False, directed=False, doc=_MULTITASK_DOC, multitask=True
    ),
}

#: Directed-step modes by name (the run config's ``meta.directed_mode``).
DIRECTED_MODES: dict[str, DirectedModeSpec] = {
    "pg": DirectedModeSpec(adapt_first=False, doc="plain policy-gradient step on the medium task"),
    "fomaml": DirectedModeSpec(adapt_first=True, doc="first-order adapt-then-step on the medium task"),
}

#: Outer optimisers by name (the run config's ``train.outer_optimizer``).
OUTER_OPTIMIZERS: dict[str, str] = {
    "adam": "Adam on the meta-loss (train.meta_lr, train.meta_lr_schedule, train.outer_grad_clip)",
    "trpo": "the MAML-RL paper's KL-bounded step on the post-adaptation policies (train.trpo_max_kl; "
    "conjugate gradient through the inner loop, backtracking line search)",
}

#: Inner-loss surrogates by name (the run config's ``meta.inner_estimator``; functions in
#: :data:`intersection_meta.pg.SURROGATES`).
INNER_ESTIMATORS: dict[str, str] = {
    "reinforce": "-mean(log pi * A), the MAML-RL paper's inner loss",
    "lvc": "ProMP's low-variance curvature surrogate -mean(pi / stop_grad(pi) * A): same gradient, but the "
    "second-order meta-gradient also credits how the pre-adaptation policy samples (MAML and Meta-SGD only; "
    "first-order learners ignore the inner loss's curvature)",
}

#: Inner-loss advantage scaling by name (the run config's ``meta.inner_advantages``).
INNER_ADVANTAGES: dict[str, str] = {
    "pg": "as pg.normalize_advantages says (the same advantages as the outer loss)",
    "normalized": "normalised per task (mean 0, std 1) in the inner loss, whatever pg.normalize_advantages says",
    "raw": "unnormalised in the inner loss, whatever pg.normalize_advantages says",
}

#: Meta-lr schedules by name (the run config's ``train.meta_lr_schedule``).
META_LR_SCHEDULES: dict[str, str] = {
    "constant": "meta_lr at every iteration",
    "linear": "meta_lr * (1 - k / iterations) at iteration k (annealed to 0 over the run, cleanrl's anneal_lr)",
}

#: Policy-input standardisation by name (the run config's ``policy.input_norm``).
INPUT_NORMS: dict[str, str] = {
    "none": "observations go to the MLP as the env gives them",
    "fitted": "(obs - mean) / std with statistics fitted once at start-up on one random-policy episode of each of "
    "200 tasks, stored in the policy (and its checkpoints)",
}

#: Policy warm starts by name (the run config's ``policy.warm_start``).
WARM_STARTS: dict[str, str] = {
    "none": "training starts from the randomly initialised policy",
    "gap_acceptance": "before the first iteration the policy imitates the closed-loop gap-acceptance rule "
    "(intersection_meta/gap_acceptance.py; intersection scenarios with the conflict features and discrete actions)",
    "rule_or_go": "for latent policies (policy.latent_dim > 0): the policy imitates the gap-acceptance rule when "
    "the episode's z_1 < 0 and 'always go' when z_1 > 0, so the latent starts out selecting between waiting and "
    "going first (the same scenarios as gap_acceptance)",
}

#: Vector-env backends by name (the run config's ``env.backend``).
BACKENDS: dict[str, BackendSpec] = {
    "auto": BackendSpec(concrete=False, doc="fast for intersection scenarios, else highway"),
    "fast": BackendSpec(concrete=True, doc="the compiled (numba) batched intersection simulator"),
    "highway": BackendSpec(
        concrete=True, doc="a gymnasium vector env of single envs: highway-env, or gymnasium's CartPole/LunarLander"
    ),
}

#: Each directed variant and the base algorithm it is compared against (benchmark reports).
DIRECTED_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (name, name.removeprefix("directed_"))
    for name, spec in ALGORITHMS.items()
    if spec.directed and name.removeprefix("directed_") in ALGORITHMS
)


def unknown_name(kind: str, name: str, table: dict) -> str:
    """One-line message for an unknown registry name, e.g. ``unknown algorithm 'mamll' (did you mean ...)``."""
    from intersection_meta.schema import did_you_mean

    return f"unknown {kind} {name!r}" + did_you_mean(name, table, what="valid")
