"""Scalar floating-point helpers that round exactly like highway-env's NumPy expressions (numba-compiled).

No ``fastmath``: LLVM then neither reassociates nor contracts ``a * b + c`` into a fused multiply-add, so
every expression below rounds as written.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

TWO_PI = 2 * math.pi


@njit(cache=True, inline="always")
def wrap_to_pi(x: float) -> float:
    """``utils.wrap_to_pi``: ``((x + pi) % (2 pi)) - pi`` with Python's float remainder, bit for bit."""
    a = x + math.pi
    if -TWO_PI <= a < TWO_PI:  # the remainder is a or a + 2 pi (exact fmod there)
        return (a + TWO_PI if a < 0 else a) - math.pi
    m = np.fmod(a, TWO_PI)
    if m != 0.0:
        if m < 0.0:
            m += TWO_PI
    else:
        m = 0.0
    return m - math.pi


@njit(cache=True, inline="always")
def dot2(u0: float, u1: float, w0: float, w1: float, fused: bool) -> float:
    """``np.dot([u0, u1], [w0, w1])`` bit for bit.

    NumPy's BLAS dot of two elements is ``fma(u1, w1, u0 * w0)`` on FMA hardware (``fused``); the fused
    multiply-add is emulated exactly with Dekker's TwoProduct and a TwoSum.
    """
    c = u0 * w0
    if not fused:
        return c + u1 * w1
    p = u1 * w1
    split = 134217729.0  # 2**27 + 1 (Veltkamp splitting)
    ca = split * u1
    a_hi = ca - (ca - u1)
    a_lo = u1 - a_hi
    cb = split * w1
    b_hi = cb - (cb - w1)
    b_lo = w1 - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    s = p + c
    bb = s - p
    t = (p - (s - bb)) + (c - bb)
    return s + (t + e)


@njit(cache=True, inline="always")
def norm2(dx: float, dy: float, fused: bool) -> float:
    """``np.linalg.norm([dx, dy])`` bit for bit (NumPy computes ``sqrt(dot(v, v))``)."""
    return math.sqrt(dot2(dx, dy, dx, dy, fused))


#: Below this magnitude ``asin(x)``, ``atan(x)``, ``tan(x)`` and ``sin(x)`` round to ``x`` exactly (the correction
#: ``x**3 / 3`` is under a millionth of an ulp; glibc and NumPy both return ``x``, see the tests), so the
#: library call is skipped. Vehicles driving straight along a lane have steering terms of ~1e-15.
_TINY = 2.0**-30


@njit(cache=True, inline="always")
def asin(x: float) -> float:
    """``math.asin`` without the call for tiny arguments (same result)."""
    return x if abs(x) < _TINY else math.asin(x)


@njit(cache=True, inline="always")
def atan(x: float) -> float:
    """``math.atan`` without the call for tiny arguments (same result)."""
    return x if abs(x) < _TINY else math.atan(x)


@njit(cache=True, inline="always")
def tan(x: float) -> float:
    """``math.tan`` without the call for tiny arguments (same result)."""
    return x if abs(x) < _TINY else math.tan(x)


@njit(cache=True, inline="always")
def sin(x: float) -> float:
    """``math.sin`` without the call for tiny arguments (same result)."""
    return x if abs(x) < _TINY else math.sin(x)


@njit(cache=True, inline="always")
def not_zero(x: float) -> float:
    """``utils.not_zero`` with ``eps = 1e-2``."""
    if abs(x) > 1e-2:
        return x
    return 1e-2 if x >= 0 else -1e-2


@njit(cache=True, inline="always")
def clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of a scalar."""
    return min(max(x, lo), hi)


@njit(cache=True, inline="always")
def round_half_even(x: float) -> float:
    """``np.round`` of a scalar (ties to even)."""
    f = math.floor(x)
    frac = x - f
    if frac > 0.5 or (frac == 0.5 and f % 2 != 0):
        return f + 1.0
    return f


@functools.lru_cache(maxsize=1)
def dot_is_fused() -> bool:
    """Whether ``np.linalg.norm`` of a 2-vector rounds like a fused multiply-add (decided on a sample)."""
    rng = np.random.default_rng(0)
    v = rng.uniform(-20, 20, size=(256, 2))
    ref = np.array([np.linalg.norm(x) for x in v])
    plain = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1])
    return not np.array_equal(ref, plain)
