"""Training health: a non-finite number stops the run at once; a collapsed policy gets a warning.

The trainer calls :func:`first_non_finite` on every iteration's metrics row and parameters *before* the row is
logged and the checkpoint written, so the last good checkpoint is never overwritten by a diverged one, and a
:class:`CollapseMonitor` that returns a warning line when the policy has stopped learning (near-zero entropy of a
discrete policy, or an exactly-zero outer gradient, for ``patience`` iterations in a row).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Metrics-row values that must be finite (NaN is allowed in the others, e.g. success rates of CartPole).
CHECKED_METRICS: tuple[str, ...] = ("inner_loss", "outer_loss", "outer_grad_norm", "policy_entropy")


class TrainingDiverged(RuntimeError):
    """A loss, gradient or parameter became non-finite; the run stopped (command-line exit status 3)."""


def first_non_finite(row: Mapping[str, float], params: Iterable[tuple[str, Any]]) -> str | None:
    """The first non-finite quantity of an iteration, e.g. ``"outer_loss = nan"`` or ``"parameter 0.weight"``;
    None when everything is finite."""
    import torch  # here, so the command lines import this module (for TrainingDiverged) without torch

    for key in CHECKED_METRICS:
        value = row.get(key)
        if value is not None and not math.isfinite(float(value)):
            return f"{key} = {value}"
    for name, tensor in params:
        if not bool(torch.isfinite(tensor.detach()).all()):
            return f"parameter {name}"
    return None


def invalid_policy_output(policy: Any, obs: Any) -> str | None:
    """A description of why ``policy``'s action distribution at ``obs`` is unusable (torch's distributions refuse
    non-finite logits, an infinite or zero scale), or None when it is valid. Finite but huge weights pass
    :func:`first_non_finite` and only fail here, when they overflow in the forward pass."""
    import torch

    try:
        with torch.no_grad():
            policy.distribution(obs)
    except ValueError as exc:
        if not is_invalid_distribution(exc):
            raise
        return "policy output (its action distribution has invalid parameters)"
    return None


def is_invalid_distribution(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributions refusing non-finite or out-of-range parameters."""
    return isinstance(exc, ValueError) and "to satisfy the constraint" in str(exc)


@dataclass
class CollapseMonitor:
    """Counts consecutive collapsed iterations; :meth:`update` returns a warning line when the count reaches
    ``patience`` (once per streak).

    Attributes:
        patience: consecutive collapsed iterations before warning.
        min_entropy_nats: a mean policy entropy below this is collapsed (None: entropy is not checked, as for a
            Gaussian policy, whose differential entropy is legitimately negative).
    """

    patience: int = 3
    min_entropy_nats: float | None = 1e-3
    streak: int = 0

    def update(self, row: Mapping[str, float]) -> str | None:
        reasons = []
        entropy, grad_norm = row.get("policy_entropy"), row.get("outer_grad_norm")
        if self.min_entropy_nats is not None and entropy is not None and entropy < self.min_entropy_nats:
            reasons.append(f"policy entropy {entropy:.2g} nats < {self.min_entropy_nats:g}")
        if grad_norm is not None and grad_norm == 0.0:
            reasons.append("outer gradient exactly 0")
        self.streak = self.streak + 1 if reasons else 0
        if self.streak != self.patience:
            return None
        return (
            f"warning: iteration {int(row['iteration'])}: the policy looks collapsed ({' and '.join(reasons)} for "
            f"{self.patience} iterations in a row); it may have stopped learning (try a smaller train.meta_lr or "
            "meta.inner_lr, or pg.entropy_coef > 0)"
        )
