"""Environments: the one place tasks become gymnasium envs (see :mod:`intersection_meta.envs.factory`).

Importing this package registers ``intersection_meta/TwoVehicleIntersection-v0`` with gymnasium (idempotent:
a re-import or a second call of :func:`register_envs` neither re-registers nor raises).
"""

from __future__ import annotations

import gymnasium as gym

#: Gymnasium id of :class:`~intersection_meta.envs.intersection.TwoVehicleIntersectionEnv` (kwarg ``task=``).
INTERSECTION_ENV_ID = "intersection_meta/TwoVehicleIntersection-v0"


def register_envs() -> None:
    """Register this package's envs with gymnasium unless they already are."""
    if INTERSECTION_ENV_ID not in gym.registry:
        gym.register(
            id=INTERSECTION_ENV_ID,
            entry_point="intersection_meta.envs.intersection:TwoVehicleIntersectionEnv",
        )


register_envs()

from intersection_meta.envs.factory import (  # noqa: E402
    make_env,
    make_vector_env,
    observation_and_action_spaces,
)

__all__ = [
    "INTERSECTION_ENV_ID",
    "make_env",
    "make_vector_env",
    "observation_and_action_spaces",
    "register_envs",
]
