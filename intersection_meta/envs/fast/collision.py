"""highway-env's vehicle collision test (``RoadObject._is_colliding``) for two 5 m x 2 m vehicles, compiled.

``utils.are_polygons_intersecting`` (separating axis test on the 8 edge normals of the two rectangles,
with the displacement over one frame) behind ``_is_colliding``'s distance gate, with the same operation
order as highway-env (``np.dot`` and ``np.linalg.norm`` through the exact :func:`~.numerics.dot2`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from intersection_meta.envs.fast.numerics import dot2, norm2

VEHICLE_LENGTH_M = 5.0
VEHICLE_WIDTH_M = 2.0
VEHICLE_DIAGONAL_M = float(np.sqrt(VEHICLE_LENGTH_M**2 + VEHICLE_WIDTH_M**2))


@njit(cache=True, _nrt=False)
def polygon(x: float, y: float, heading: float) -> tuple[float, ...]:
    """``RoadObject.polygon()`` without the closing point, flat: ``(x0, y0, x1, y1, x2, y2, x3, y3)``."""
    c, s = math.cos(heading), math.sin(heading)
    hl, hw = VEHICLE_LENGTH_M / 2, VEHICLE_WIDTH_M / 2
    return (
        c * -hl + (-s) * -hw + x,
        s * -hl + c * -hw + y,
        c * -hl + (-s) * hw + x,
        s * -hl + c * hw + y,
        c * hl + (-s) * hw + x,
        s * hl + c * hw + y,
        c * hl + (-s) * -hw + x,
        s * hl + c * -hw + y,
    )


@njit(cache=True, _nrt=False)
def _project(poly: tuple[float, ...], nx: float, ny: float, fused: bool) -> tuple[float, float]:
    lo = np.inf
    hi = -np.inf
    for k in range(4):
        p = dot2(poly[2 * k], poly[2 * k + 1], nx, ny, fused)
        lo = min(lo, p)
        hi = max(hi, p)
    return lo, hi


@njit(cache=True, _nrt=False)
def _interval_distance(min_a: float, max_a: float, min_b: float, max_b: float) -> float:
    return min_b - max_a if min_a < min_b else min_a - max_b


@njit(cache=True, _nrt=False)
def polygons_intersecting(
    a: tuple[float, ...], b: tuple[float, ...], dax: float, day: float, dbx: float, dby: float, fused: bool
) -> tuple[bool, bool, float, float]:
    """``utils.are_polygons_intersecting(a, b, disp_a, disp_b)`` for two rectangles (flat, see
    :func:`polygon`).

    Returns:
        ``(intersecting, will_intersect, translation_x, translation_y)``; the translation is 0 unless
        ``will_intersect``.
    """
    intersecting = True
    will = True
    min_distance = np.inf
    axis_x = axis_y = 0.0
    ddx, ddy = dax - dbx, day - dby
    # Centre difference, as ``a[:-1].mean(axis=0) - b[:-1].mean(axis=0)``.
    cx = (((a[0] + a[2]) + a[4]) + a[6]) / 4 - (((b[0] + b[2]) + b[4]) + b[6]) / 4
    cy = (((a[1] + a[3]) + a[5]) + a[7]) / 4 - (((b[1] + b[3]) + b[5]) + b[7]) / 4
    for which in range(2):
        poly = a if which == 0 else b
        for k in range(4):
            k2 = (k + 1) % 4
            nx = -poly[2 * k2 + 1] + poly[2 * k + 1]
            ny = poly[2 * k2] - poly[2 * k]
            norm = norm2(nx, ny, fused)
            nx /= norm
            ny /= norm
            min_a, max_a = _project(a, nx, ny, fused)
            min_b, max_b = _project(b, nx, ny, fused)
            if _interval_distance(min_a, max_a, min_b, max_b) > 0:
                intersecting = False
            vp = dot2(nx, ny, ddx, ddy, fused)
            if vp < 0:
                min_a += vp
            else:
                max_a += vp
            distance = _interval_distance(min_a, max_a, min_b, max_b)
            if distance > 0:
                will = False
            if not intersecting and not will:
                return False, False, 0.0, 0.0
            if abs(distance) < min_distance:
                min_distance = abs(distance)
                if dot2(cx, cy, nx, ny, fused) > 0:
                    axis_x, axis_y = nx, ny
                else:
                    axis_x, axis_y = -nx, -ny
    if not will:
        return intersecting, False, 0.0, 0.0
    return intersecting, True, min_distance * axis_x, min_distance * axis_y


@njit(cache=True, _nrt=False)
def is_colliding(
    xa: float,
    ya: float,
    ha: float,
    va: float,
    xb: float,
    yb: float,
    hb: float,
    vb: float,
    dt: float,
    fused: bool,
) -> tuple[bool, bool, float, float]:
    """``a._is_colliding(b, dt)`` for vehicles ``a`` (first in ``road.vehicles``) and ``b``."""
    if norm2(xb - xa, yb - ya, fused) > (VEHICLE_DIAGONAL_M + VEHICLE_DIAGONAL_M) / 2 + va * dt:
        return False, False, 0.0, 0.0
    dax, day = va * math.cos(ha) * dt, va * math.sin(ha) * dt
    dbx, dby = vb * math.cos(hb) * dt, vb * math.sin(hb) * dt
    return polygons_intersecting(polygon(xa, ya, ha), polygon(xb, yb, hb), dax, day, dbx, dby, fused)
