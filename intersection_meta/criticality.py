"""Criticality metrics of two-vehicle intersection episodes, after CommonRoad-CriMe.

One implementation, fed by both backends and by the viewer: :class:`CriticalityTracker` takes the two vehicles'
states at every **simulation frame** (15 Hz by default; the highway backend captures them from its road, the fast
backend's kernel writes them into an array) and keeps four running values per episode (:data:`CRITICALITY_KEYS`).
Its per-frame code is scalar and compiled with numba (a numpy version cost the fast backend 80% of its speed at
400 scenes); the formulas are plain functions callable from Python.

``min_distance_m``
    Minimum Euclidean distance between the two cars' **centres** over the episode [m]. The simulators move a vehicle
    along a straight segment at constant speed within a frame (an explicit Euler step), so the minimum is taken
    over each frame's segment in closed form, not only at the frames. (CriMe's footprint-based "distance of closest
    encounter", DCE, is not implemented in CriMe; centre distance is what both simulators state exactly.) Frames
    after the other car has left the road (highway-env removes it at the end of its exit lane) do not count.

``pet_s``
    Post-encroachment time at the conflict area [s], CriMe's ``PET``: ``PET = t_entry(A2, CA) - t_exit(A1, CA)``,
    where A1 is the car that passes the conflict area first and A2 the other one. The **conflict area** CA is,
    as in CriMe's ``ET.get_ca``, the intersection of the two cars' lanes inside the junction (the areas of their
    junction lanes ``ir* -> il*``, lane centre +- half the lane width, 4 m); a car *occupies* it while its 5 m x
    2 m footprint touches it (CriMe's ``get_ca_duration``: the vehicle polygon intersects the CA). Entry and exit
    times are interpolated within the frame. Occupancy is evaluated with the footprint on its route's centre line,
    at the distance the car has travelled (``sum(speed * dt)``, which is the simulators' own path length), so the
    occupancy interval of each car is a fixed interval of travelled distance computed once per task
    (:func:`conflict_zone`, to within :data:`ZONE_RESOLUTION_M`). Values: finite >= 0 when one car left the CA
    before the other entered it; **0** when both occupied it at the same time (CriMe returns None there; 0 keeps
    such episodes, the most critical ones, in the means); **inf** when there is no conflict area (routes whose
    junction lanes do not overlap) or the second car did not enter it before the episode ended (CriMe: inf).
    Unlike CriMe's code, whose case order returns inf when the ego never leaves the CA even though the other car
    passed first, the car that entered first is A1 in every case.

``min_ttc_s``
    Minimum over the frames of the time-to-collision **along the paths** [s]. CriMe's ``TTC`` (constant
    acceleration, Jansson's formula 5.24) is defined for two vehicles on one lanelet and is inf for crossing paths;
    for a crossing we use the conflict-area notion: with both cars keeping their current speeds along their routes,
    car i occupies the CA during ``[t_in_i, t_out_i]`` with ``t_in_i = max(0, (d_in_i - d_i) / v_i)`` and
    ``t_out_i = (d_out_i - d_i) / v_i`` (``d`` travelled distance, ``[d_in_i, d_out_i]`` its occupancy interval;
    a car that stands before the CA never enters it, one that has passed it never re-enters), and
    ``TTC = max(t_in_ego, t_in_other)`` if ``max(t_in) < min(t_out)`` (their occupancies would overlap), else
    inf. It is 0 while both occupy the CA, and inf without a conflict area.

``ego_peak_decel_mps2``
    The ego's peak deceleration ``max(0, max_t(-a_long(t)))`` [m/s^2], with ``a_long = (v_f - v_{f-1}) / dt``
    per frame (exactly the acceleration the simulators integrate); 0 if the ego never slows down. Frames that
    start with the ego already crashed (highway-env then brakes it with ``a = -speed``) do not count.

**Conflict-area observation features** (opt-in, ``observation.features``; :func:`conflict_features`). Per vehicle,
from the same occupancy interval ``[d_in, d_out]`` and travelled distance ``d`` as ``min_ttc_s`` (the tracker's own
running state, so both backends share the code):

``conflict_distance``
    ``d_in - d``: the distance along the car's route to the entry of the conflict area [m], negative once it has
    entered; divided by :data:`CONFLICT_DISTANCE_SCALE_M` (100 m) and clipped to [-1, 1].
``conflict_time``
    ``t_in`` of ``min_ttc_s``: ``(d_in - d) / v`` before the area, 0 while inside it; :data:`CONFLICT_TIME_CAP_S`
    (10 s) when the car stands before it, has passed it (``d > d_out``) or would take longer; divided by the cap,
    so in [0, 1] (1 = "far").

Without a conflict area (routes whose junction lanes do not overlap, e.g. both cars turn right) both features take
their "far" value, 1. Once the other car has left the road (highway-env removes it at the end of its exit lane, and
its observation row becomes zero padding) its values are :data:`CONFLICT_FEATURES_GONE`, those of a car far past
the area: ``(-1, 1)``. (Zero would read as "in the conflict area now", and a policy trained with it learned to
wait for a car that was no longer there.)

Non-finite values: ``inf`` as above (never NaN). ``evaluation.json`` stores inf as ``null``; means over episodes
(:func:`finite_mean`) skip infinite values.

References:
    Lin, Y., Althoff, M.: "CommonRoad-CriMe: A Toolbox for Criticality Measures of Autonomous Vehicles", IEEE
    Intelligent Vehicles Symposium (IV) 2023 (code: github.com/CommonRoad/commonroad-crime, ``measure/time/pet.py``,
    ``et.py``, ``ttc.py``); Westhofen et al.: "Criticality Metrics for Automated Driving: A Review and Suitability
    Analysis of the State of the Art", Archives of Computational Methods in Engineering 30, 2023
    (criticality-metrics.readthedocs.io, which CriMe's docstrings point to); Allen, B. L. et al.: "Analysis of
    Traffic Conflicts and Collisions", Transportation Research Record 667, 1978 (PET).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit, prange

#: The metrics, in the order every output lists them.
CRITICALITY_KEYS: tuple[str, ...] = ("min_distance_m", "pet_s", "min_ttc_s", "ego_peak_decel_mps2")

#: Columns of one vehicle's state per frame, as :meth:`CriticalityTracker.update` takes them.
FRAME_FIELDS: tuple[str, ...] = ("x_m", "y_m", "speed_mps", "crashed")
F_X, F_Y, F_SPEED, F_CRASHED = range(4)

#: highway-env's ``Vehicle.LENGTH`` and ``Vehicle.WIDTH`` [m] (the footprint that occupies the conflict area).
VEHICLE_LENGTH_M = 5.0
VEHICLE_WIDTH_M = 2.0
#: Spacing of the raster that represents the conflict area [m]; occupancy intervals are exact to about this.
ZONE_RESOLUTION_M = 0.02
_EGO, _OTHER = 0, 1


# ----------------------------------------------------------------------------------------------------------
# The conflict area and each car's occupancy interval (once per task)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConflictZone:
    """Where each car occupies the conflict area, as intervals of the distance it has travelled since its start.

    Attributes:
        ego_m: ``(d_in, d_out)`` of the ego [m]; ``(inf, inf)`` without a conflict area.
        other_m: the same for the other car.
    """

    ego_m: tuple[float, float]
    other_m: tuple[float, float]

    @property
    def exists(self) -> bool:
        return math.isfinite(self.ego_m[0])


def _lane_positions(g: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-line points ``(x, y)`` and headings at longitudinal positions ``s`` of the lane with geometry row
    ``g`` (:mod:`intersection_meta.envs.fast.road` columns; highway-env's ``lane.position``/``heading_at``)."""
    from intersection_meta.envs.fast import road as R

    if g[R.L_CIRCULAR] == 0.0:
        return g[R.L_START_X] + s * g[R.L_DIR_X], g[R.L_START_Y] + s * g[R.L_DIR_Y], np.full_like(s, g[R.L_HEADING])
    phi = g[R.L_TURN] * s / g[R.L_RADIUS] + g[R.L_START_PHASE]
    x = g[R.L_CENTER_X] + g[R.L_RADIUS] * np.cos(phi)
    y = g[R.L_CENTER_Y] + g[R.L_RADIUS] * np.sin(phi)
    return x, y, phi + np.pi / 2 * g[R.L_TURN]


def _on_lane_area(g: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points lie on the lane's area: ``0 <= s <= length`` and ``|lateral| <= width / 2`` (highway-env's
    ``lane.local_coordinates``)."""
    from intersection_meta.envs.fast import road as R

    if g[R.L_CIRCULAR] == 0.0:
        dx, dy = x - g[R.L_START_X], y - g[R.L_START_Y]
        s, r = dx * g[R.L_DIR_X] + dy * g[R.L_DIR_Y], dx * g[R.L_LAT_X] + dy * g[R.L_LAT_Y]
    else:
        dx, dy = x - g[R.L_CENTER_X], y - g[R.L_CENTER_Y]
        sp = g[R.L_START_PHASE]
        phi = sp + (np.arctan2(dy, dx) - sp + np.pi) % (2 * np.pi) - np.pi
        s = g[R.L_TURN] * (phi - sp) * g[R.L_RADIUS]
        r = g[R.L_TURN] * (g[R.L_RADIUS] - np.hypot(dx, dy))
    return (s >= 0) & (s <= g[R.L_LENGTH]) & (np.abs(r) <= g[R.L_WIDTH] / 2)


def _route_pose(lanes: Sequence[int], arc_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-line pose at arc lengths ``arc_m`` along a route (lanes in order, arc 0 = start of the first)."""
    from intersection_meta.envs.fast.road import L_LENGTH, lane_table

    geo = lane_table().geometry
    x, y, h = np.empty_like(arc_m), np.empty_like(arc_m), np.empty_like(arc_m)
    start = 0.0
    for k, lane in enumerate(lanes):
        length = geo[lane, L_LENGTH]
        sel = arc_m >= start if k == len(lanes) - 1 else (arc_m >= start) & (arc_m < start + length)
        if k == 0:
            sel |= arc_m < start
        x[sel], y[sel], h[sel] = _lane_positions(geo[lane], arc_m[sel] - start)
        start += length
    return x, y, h


def _touches(px: np.ndarray, py: np.ndarray, x: float, y: float, heading: float) -> bool:
    """Whether any point lies in the footprint (``VEHICLE_LENGTH_M`` x ``VEHICLE_WIDTH_M``) centred at ``(x, y)``."""
    c, s = math.cos(heading), math.sin(heading)
    dx, dy = px - x, py - y
    along, across = np.abs(dx * c + dy * s), np.abs(-dx * s + dy * c)
    return bool(np.any((along <= VEHICLE_LENGTH_M / 2) & (across <= VEHICLE_WIDTH_M / 2)))


def _occupancy_interval(
    lanes: Sequence[int], junction_start_m: float, junction_end_m: float, px: np.ndarray, py: np.ndarray
) -> tuple[float, float]:
    """``(first, last)`` route arc length at which the footprint touches the raster points (coarse scan, then
    bisection of both boundaries to 1e-6 m)."""
    margin = VEHICLE_LENGTH_M
    arcs = np.arange(junction_start_m - margin, junction_end_m + margin, 0.25)
    x, y, h = _route_pose(lanes, arcs)
    hit = np.array([_touches(px, py, x[i], y[i], h[i]) for i in range(arcs.size)])
    if not hit.any():
        return math.inf, math.inf
    first, last = int(np.argmax(hit)), int(arcs.size - 1 - np.argmax(hit[::-1]))

    def touches_at(arc: float) -> bool:
        xa, ya, ha = _route_pose(lanes, np.array([arc]))
        return _touches(px, py, float(xa[0]), float(ya[0]), float(ha[0]))

    def boundary(outside: float, inside: float) -> float:
        while abs(inside - outside) > 1e-6:
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if touches_at(mid) else (inside, mid)
        return 0.5 * (inside + outside)

    return (
        float(boundary(arcs[first - 1], arcs[first])),
        float(boundary(arcs[min(last + 1, arcs.size - 1)], arcs[last])),
    )


@functools.lru_cache(maxsize=256)
def _route_zone(ego_entry: str, ego_intent: str, other_entry: str, other_intent: str) -> ConflictZone:
    """Occupancy intervals in route arc length from the start of each car's approach lane (cached per route pair)."""
    from intersection_meta.envs.fast import road as R

    tab = R.lane_table()
    routes = []
    for entry, intent in ((ego_entry, ego_intent), (other_entry, other_intent)):
        k = R.entry_index(entry)
        routes.append(R.route(tab.index((f"o{k}", f"ir{k}", 0)), R.destination_node(k, intent)))
    junction = [tab.geometry[rt[1]] for rt in routes]  # route = (approach, junction, exit)
    pad = junction[0][R.L_WIDTH] / 2 + ZONE_RESOLUTION_M
    lo_x = max(g[R.L_BBOX_XMIN] for g in junction) - pad
    hi_x = min(g[R.L_BBOX_XMAX] for g in junction) + pad
    lo_y = max(g[R.L_BBOX_YMIN] for g in junction) - pad
    hi_y = min(g[R.L_BBOX_YMAX] for g in junction) + pad
    if lo_x > hi_x or lo_y > hi_y:
        return ConflictZone((math.inf, math.inf), (math.inf, math.inf))
    h = ZONE_RESOLUTION_M  # a lattice on multiples of h, so straight lane edges at whole metres lie on it
    gx, gy = np.meshgrid(
        np.arange(math.floor(lo_x / h), math.ceil(hi_x / h) + 1) * h,
        np.arange(math.floor(lo_y / h), math.ceil(hi_y / h) + 1) * h,
    )
    gx, gy = gx.ravel(), gy.ravel()
    in_zone = _on_lane_area(junction[0], gx, gy) & _on_lane_area(junction[1], gx, gy)
    if not in_zone.any():
        return ConflictZone((math.inf, math.inf), (math.inf, math.inf))
    px, py = gx[in_zone], gy[in_zone]
    intervals = []
    for rt in routes:
        start = tab.geometry[rt[0], R.L_LENGTH]
        intervals.append(_occupancy_interval(rt, start, start + tab.geometry[rt[1], R.L_LENGTH], px, py))
    return ConflictZone(intervals[0], intervals[1])


def conflict_zone(task: Any) -> ConflictZone:
    """The conflict area of an intersection task as each car's occupancy interval of travelled distance [m].

    The ego starts ``ego_distance_to_stop_m`` before its stop line, i.e. at arc length ``100 - that`` of its
    100 m approach lane; the interval is shifted accordingly (likewise for the other car).
    """
    from intersection_meta.tasks import APPROACH_LANE_LENGTH_M

    zone = _route_zone(task.ego_entry, task.ego_intent, task.other_entry, task.other_intent)
    if not zone.exists:
        return zone
    shift_e = APPROACH_LANE_LENGTH_M - task.ego_distance_to_stop_m
    shift_o = APPROACH_LANE_LENGTH_M - task.other_distance_to_stop_m
    return ConflictZone(
        (zone.ego_m[0] - shift_e, zone.ego_m[1] - shift_e), (zone.other_m[0] - shift_o, zone.other_m[1] - shift_o)
    )


def zone_array(tasks: Sequence[Any]) -> np.ndarray:
    """``[N, 2, 2]`` float64: ``zones[i, vehicle] = (d_in, d_out)`` of task ``i`` (vehicle 0 ego, 1 other)."""
    out = np.empty((len(tasks), 2, 2))
    for i, task in enumerate(tasks):
        z = conflict_zone(task)
        out[i, _EGO], out[i, _OTHER] = z.ego_m, z.other_m
    return out


# ----------------------------------------------------------------------------------------------------------
# Formulas (scalar, compiled with numba; callable from Python too)
# ----------------------------------------------------------------------------------------------------------


@njit(cache=True)
def segment_min_distance_m(ax: float, ay: float, bx: float, by: float) -> float:
    """``min_{tau in [0, 1]} |a + tau (b - a)|``: the closest approach of a relative position that moves linearly
    from ``a`` to ``b``, at ``tau* = clip(-a.(b - a) / |b - a|^2, 0, 1)``."""
    ex, ey = bx - ax, by - ay
    ee = ex * ex + ey * ey
    tau = 0.0
    if ee > 0.0:
        tau = min(max(-(ax * ex + ay * ey) / ee, 0.0), 1.0)
    return math.hypot(ax + tau * ex, ay + tau * ey)


@njit(cache=True)
def post_encroachment_time_s(ego_in: float, ego_out: float, other_in: float, other_out: float) -> float:
    """PET from each car's conflict-area entry and exit times [s] (NaN: has not happened):
    ``t_entry(A2) - t_exit(A1)`` with A1 the car that entered first; 0 if A2 entered before A1 left; inf if a car
    never entered (module docstring)."""
    if math.isnan(ego_in) or math.isnan(other_in):
        return math.inf
    if ego_in <= other_in:
        first_out, second_in = ego_out, other_in
    else:
        first_out, second_in = other_out, ego_in
    if math.isnan(first_out) or second_in < first_out:
        return 0.0
    return second_in - first_out


@njit(cache=True)
def _occupancy(d: float, v: float, d_in: float, d_out: float) -> tuple[float, float]:
    """``(t_in, t_out)`` of one car at constant speed: when it would enter and leave its occupancy interval
    (``(inf, -inf)`` if it never will: standing before it, or past it)."""
    if d < d_in:
        if v > 0.0:
            return (d_in - d) / v, (d_out - d) / v
        return math.inf, math.inf
    if d <= d_out:
        if v > 0.0:
            return 0.0, (d_out - d) / v
        return 0.0, math.inf
    return math.inf, -math.inf


@njit(cache=True)
def ttc_along_paths_s(
    ego_d: float, ego_v: float, other_d: float, other_v: float,
    ego_in: float, ego_out: float, other_in: float, other_out: float,
) -> float:  # fmt: skip
    """Time-to-collision along the paths at constant speeds [s] (module docstring): from the travelled distances
    ``*_d`` [m], speeds ``*_v`` [m/s] and occupancy intervals ``[*_in, *_out]`` [m];
    ``max(t_in) if max(t_in) < min(t_out) else inf``."""
    e_in, e_out = _occupancy(ego_d, ego_v, ego_in, ego_out)
    o_in, o_out = _occupancy(other_d, other_v, other_in, other_out)
    start, end = max(e_in, o_in), min(e_out, o_out)
    return start if start < end else math.inf


#: ``conflict_distance`` is this distance [m] divided by it, then clipped to [-1, 1].
CONFLICT_DISTANCE_SCALE_M = 100.0
#: ``conflict_time`` is the time to the conflict area [s], capped at this value, divided by it (in [0, 1]).
CONFLICT_TIME_CAP_S = 10.0
#: ``(conflict_distance, conflict_time)`` of a car that has left the road: far past the conflict area.
CONFLICT_FEATURES_GONE: tuple[float, float] = (-1.0, 1.0)


@njit(cache=True)
def conflict_features(d: float, v: float, d_in: float, d_out: float) -> tuple[float, float]:
    """The normalised observation features ``(conflict_distance, conflict_time)`` of one car (module docstring)
    from its travelled distance ``d`` [m], speed ``v`` [m/s] and occupancy interval ``[d_in, d_out]`` [m]:
    ``clip((d_in - d) / 100, -1, 1)`` and ``min(t_in, 10) / 10`` with ``t_in`` as in :func:`ttc_along_paths_s`;
    ``(1, 1)`` ("far") without a conflict area (``d_in`` infinite).

    >>> conflict_features(10.0, 5.0, 40.0, 50.0)
    (0.3, 0.6)
    """
    if not math.isfinite(d_in):
        return 1.0, 1.0
    distance = min(max((d_in - d) / CONFLICT_DISTANCE_SCALE_M, -1.0), 1.0)
    t_in, _ = _occupancy(d, v, d_in, d_out)
    return distance, min(t_in, CONFLICT_TIME_CAP_S) / CONFLICT_TIME_CAP_S


def finite_mean(values: Any) -> float:
    """Mean of the finite entries (NaN if there are none): how episode metrics are averaged."""
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def json_value(value: float) -> float | None:
    """A metric for JSON: finite floats as they are, inf and NaN as ``null``."""
    return float(value) if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------------------
# The per-episode accumulator
# ----------------------------------------------------------------------------------------------------------

# Columns of the tracker's per-scene state (float64).
_T, _D_E, _D_O, _X_E, _Y_E, _X_O, _Y_O, _V_E, _V_O, _CRASHED_E = range(10)
_IN_E, _OUT_E, _IN_O, _OUT_O = range(10, 14)  # conflict-area entry/exit times (NaN: not yet)
_MIN_DIST, _MIN_TTC, _PEAK_DECEL = range(14, 17)
_NSTATE = 17


@njit(cache=True)
def _reset_scene(i: int, st: np.ndarray, zones: np.ndarray, states: np.ndarray) -> None:
    st[i, _T] = 0.0
    st[i, _D_E] = 0.0
    st[i, _D_O] = 0.0
    st[i, _X_E], st[i, _Y_E] = states[i, 0, F_X], states[i, 0, F_Y]
    st[i, _X_O], st[i, _Y_O] = states[i, 1, F_X], states[i, 1, F_Y]
    st[i, _V_E], st[i, _V_O] = states[i, 0, F_SPEED], states[i, 1, F_SPEED]
    st[i, _CRASHED_E] = states[i, 0, F_CRASHED]
    for k in range(4):  # a threshold already reached at the start (not in the shipped geometry) counts at t = 0
        st[i, _IN_E + k] = 0.0 if zones[i, k] <= 0.0 else math.nan
    st[i, _MIN_DIST] = math.hypot(st[i, _X_O] - st[i, _X_E], st[i, _Y_O] - st[i, _Y_E])
    st[i, _MIN_TTC] = ttc_along_paths_s(0.0, st[i, _V_E], 0.0, st[i, _V_O], zones[i, 0], zones[i, 1], zones[i, 2],
                                        zones[i, 3])
    st[i, _PEAK_DECEL] = 0.0


@njit(cache=True)
def _update_scene(i: int, st: np.ndarray, zones: np.ndarray, frames: np.ndarray, present: np.ndarray,
                  dt: float) -> None:
    """Add the frames of one decision step of scene ``i`` (see :meth:`CriticalityTracker.update`)."""
    here = present[i]
    z_in_e, z_out_e, z_in_o, z_out_o = zones[i, 0], zones[i, 1], zones[i, 2], zones[i, 3]
    t, d_e, d_o = st[i, _T], st[i, _D_E], st[i, _D_O]
    x_e, y_e, x_o, y_o = st[i, _X_E], st[i, _Y_E], st[i, _X_O], st[i, _Y_O]
    v_e, v_o, crashed_e = st[i, _V_E], st[i, _V_O], st[i, _CRASHED_E]
    min_dist, min_ttc, peak_decel = st[i, _MIN_DIST], st[i, _MIN_TTC], st[i, _PEAK_DECEL]
    for f in range(frames.shape[1]):
        # Travelled distance: the simulators move each car by speed * dt per frame (speed at the frame's start).
        d_e1 = d_e + v_e * dt
        d_o1 = d_o + v_o * dt if here else d_o
        # Conflict-area entry/exit: the first crossing of each threshold, interpolated within the frame.
        for k in range(4):
            a, b = (d_e, d_e1) if k < 2 else (d_o, d_o1)
            z = zones[i, k]
            if b >= z and math.isnan(st[i, _IN_E + k]):
                frac = min(max((z - a) / (b - a), 0.0), 1.0) if b > a else 1.0
                st[i, _IN_E + k] = t + frac * dt
        x_e1, y_e1 = frames[i, f, 0, F_X], frames[i, f, 0, F_Y]
        x_o1, y_o1 = frames[i, f, 1, F_X], frames[i, f, 1, F_Y]
        v_e1, v_o1 = frames[i, f, 0, F_SPEED], frames[i, f, 1, F_SPEED]
        # Minimum centre distance over the frame's segment and TTC (while the other car is on the road).
        if here:
            min_dist = min(min_dist, segment_min_distance_m(x_o - x_e, y_o - y_e, x_o1 - x_e1, y_o1 - y_e1))
            min_ttc = min(min_ttc, ttc_along_paths_s(d_e1, v_e1, d_o1, v_o1, z_in_e, z_out_e, z_in_o, z_out_o))
        # The ego's deceleration, over frames that start with the ego not crashed.
        if crashed_e == 0.0:
            peak_decel = max(peak_decel, -(v_e1 - v_e) / dt)
        t += dt
        d_e, d_o = d_e1, d_o1
        x_e, y_e, x_o, y_o = x_e1, y_e1, x_o1, y_o1
        v_e, v_o = v_e1, (v_o1 if here else 0.0)
        crashed_e = frames[i, f, 0, F_CRASHED]
    st[i, _T], st[i, _D_E], st[i, _D_O] = t, d_e, d_o
    st[i, _X_E], st[i, _Y_E], st[i, _X_O], st[i, _Y_O] = x_e, y_e, x_o, y_o
    st[i, _V_E], st[i, _V_O], st[i, _CRASHED_E] = v_e, v_o, crashed_e
    st[i, _MIN_DIST], st[i, _MIN_TTC], st[i, _PEAK_DECEL] = min_dist, min_ttc, peak_decel


@njit(cache=True)
def _update_serial(st, zones, frames, present, skip, dt):
    for i in range(st.shape[0]):
        if not skip[i]:
            _update_scene(i, st, zones, frames, present, dt)


@njit(cache=True, parallel=True)
def _update_parallel(st, zones, frames, present, skip, dt):
    for i in prange(st.shape[0]):
        if not skip[i]:
            _update_scene(i, st, zones, frames, present, dt)


@njit(cache=True)
def _reset_masked(st, zones, states, mask):
    for i in range(st.shape[0]):
        if mask[i]:
            _reset_scene(i, st, zones, states)


@njit(cache=True)
def _conflict_values(st, zones, out):
    for i in range(st.shape[0]):
        for v in range(2):  # state columns _D_E, _D_O and _V_E, _V_O; zones (in, out) of ego then other
            out[i, v, 0], out[i, v, 1] = conflict_features(
                st[i, _D_E + v], st[i, _V_E + v], zones[i, 2 * v], zones[i, 2 * v + 1]
            )


@njit(cache=True)
def _values(st, out):
    for i in range(st.shape[0]):
        out[0, i] = st[i, _MIN_DIST]
        out[1, i] = post_encroachment_time_s(st[i, _IN_E], st[i, _OUT_E], st[i, _IN_O], st[i, _OUT_O])
        out[2, i] = st[i, _MIN_TTC]
        out[3, i] = st[i, _PEAK_DECEL]


class CriticalityTracker:
    """Running criticality metrics of ``N`` scenes, updated once per decision step with that step's frames.

    Args:
        zones: ``[N, 2, 2]`` occupancy intervals (:func:`zone_array`).
        dt_s: Simulation frame length [s].
        parallel_min_scenes: batches of at least this many scenes are spread over numba's threads.

    Call :meth:`reset` with the initial states of the scenes that start an episode, then :meth:`update` after every
    step with its frames; :meth:`values` gives the running metrics. The per-frame work is scalar code compiled with
    numba (one loop over scenes and frames, the same code for both backends and the viewer).
    """

    def __init__(self, zones: np.ndarray, dt_s: float, parallel_min_scenes: int = 4096) -> None:
        self.zones = np.ascontiguousarray(np.asarray(zones, dtype=np.float64).reshape(-1, 4))
        n = self.zones.shape[0]
        self.dt_s = float(dt_s)
        self._parallel = n >= parallel_min_scenes
        self._state = np.zeros((n, _NSTATE))
        self._state[:, _IN_E : _OUT_O + 1] = np.nan
        self._state[:, _MIN_DIST] = np.inf
        self._state[:, _MIN_TTC] = np.inf
        self._no_skip = np.zeros(n, dtype=np.bool_)

    @property
    def num_scenes(self) -> int:
        return self.zones.shape[0]

    def reset(self, mask: np.ndarray, states: np.ndarray) -> None:
        """Start new episodes in the scenes of ``mask`` from ``states`` ``[N, 2, 4]`` (:data:`FRAME_FIELDS`)."""
        _reset_masked(self._state, self.zones, np.asarray(states, dtype=np.float64), np.asarray(mask, dtype=np.bool_))

    def update(self, frames: np.ndarray, present: np.ndarray, skip: np.ndarray | None = None) -> None:
        """Add one decision step: ``frames`` ``[N, F, 2, 4]`` the states after each frame (:data:`FRAME_FIELDS`),
        ``present`` ``[N]`` whether the other car was on the road during the step; scenes of ``skip`` (reset instead
        of stepped) are left alone."""
        update = _update_parallel if self._parallel and numba.get_num_threads() > 1 else _update_serial
        skip = self._no_skip if skip is None else np.asarray(skip, dtype=np.bool_)
        update(self._state, self.zones, np.asarray(frames, dtype=np.float64), np.asarray(present, dtype=np.bool_),
               skip, self.dt_s)

    def conflict_features(self) -> np.ndarray:
        """``[N, 2, 2]`` float64: ``out[i, vehicle] = (conflict_distance, conflict_time)`` (normalised, see
        :func:`conflict_features`) of each car at the current state of each scene (vehicle 0 ego, 1 other)."""
        out = np.empty((self.num_scenes, 2, 2))
        _conflict_values(self._state, self.zones, out)
        return out

    def values(self) -> dict[str, np.ndarray]:
        """The running metrics ``{key: [N] float64}`` (:data:`CRITICALITY_KEYS`)."""
        out = np.empty((len(CRITICALITY_KEYS), self.num_scenes))
        _values(self._state, out)
        return dict(zip(CRITICALITY_KEYS, out, strict=True))


def recording_series(task: Any, frame_states: np.ndarray, dt_s: float) -> np.ndarray:
    """Running metrics at every frame of a recorded intersection episode: ``[F, len(CRITICALITY_KEYS)]``.

    ``frame_states`` ``[F, 2, >= 6]`` has :data:`intersection_meta.recording.STATE_FIELDS` columns (x, y, heading,
    speed, present, crashed); frame 0 is the initial state. The values at the last frame of each decision step are
    the ones the env reports after that step; the frames in between give the viewer's running values.
    """
    states = np.asarray(frame_states, dtype=np.float64)
    rows = np.ascontiguousarray(np.stack([states[..., 0], states[..., 1], states[..., 3], states[..., 5]], axis=-1))
    tracker = CriticalityTracker(zone_array([task]), dt_s)
    tracker.reset(np.ones(1, dtype=bool), rows[:1])
    out = np.empty((len(rows), len(CRITICALITY_KEYS)))
    out[0] = [v[0] for v in tracker.values().values()]
    for f in range(1, len(rows)):
        # ``present`` of frame f: whether the other car was stepped in it (highway-env removes it between steps).
        tracker.update(rows[None, f : f + 1], states[f : f + 1, _OTHER, 4] > 0.5)
        out[f] = [v[0] for v in tracker.values().values()]
    return out
