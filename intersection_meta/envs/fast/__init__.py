"""The fast backend: highway-env's two-vehicle intersection compiled with numba, batched over scenes.

* :mod:`.road`: the lane table, routes and task -> initial scene helpers (read from highway-env once);
* :mod:`.numerics`: scalar helpers that round like highway-env's NumPy expressions;
* :mod:`.collision`: the separating-axis collision test;
* :mod:`.kernel`: the per-step simulation (numba, ``cache=True``);
* :mod:`.vector_env`: :class:`FastIntersectionVectorEnv`, the gymnasium ``VectorEnv``.
"""

from __future__ import annotations

from intersection_meta.envs.fast.vector_env import FastIntersectionVectorEnv

__all__ = ["FastIntersectionVectorEnv"]
