"""Meta-learners: MAML, FOMAML, Meta-SGD and Directed-* behind one class (see ``learners``).

The algorithms and directed modes themselves are listed in :mod:`intersection_meta.registry`.
"""

from __future__ import annotations

from intersection_meta.meta.learners import LossFn, MetaLearner, sgd_step

__all__ = ["LossFn", "MetaLearner", "sgd_step"]
