"""Meta-learners: MAML, FOMAML, Meta-SGD and Directed-* behind one protocol (see ``learners``)."""

from __future__ import annotations

from intersection_meta.meta.learners import (
    ALGORITHMS,
    DIRECTED_MODES,
    AlgorithmSpec,
    LossFn,
    MetaConfig,
    MetaLearner,
    make_learner,
    sgd_step,
)

__all__ = [
    "ALGORITHMS",
    "DIRECTED_MODES",
    "AlgorithmSpec",
    "LossFn",
    "MetaConfig",
    "MetaLearner",
    "make_learner",
    "sgd_step",
]
