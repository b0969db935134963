"""Criticality metrics of two-vehicle intersection episodes, after CommonRoad-CriMe.

One implementation, fed by both backends and by the viewer: :class:`CriticalityTracker` takes the two vehicles'
states at every **simulation frame** (15 Hz by default; the highway backend captures them from its road, the fast
backend's kernel writes them into an array) and keeps four running values per episode (:data:`CRITICALITY_KEYS`):

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
# Pure formulas (vectorised)
# ----------------------------------------------------------------------------------------------------------


def segment_min_distance_m(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``min_{tau in [0, 1]} |a + tau (b - a)|``: the closest approach of a relative position that moves linearly
    from ``a`` to ``b`` (``tau* = clip(-a.(b-a) / |b-a|^2, 0, 1)``).

    >>> float(segment_min_distance_m(np.array(-3.0), np.array(4.0), np.array(3.0), np.array(4.0)))
    4.0
    """
    ex, ey = bx - ax, by - ay
    ee = ex * ex + ey * ey
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(ee > 0, np.clip(-(ax * ex + ay * ey) / ee, 0.0, 1.0), 0.0)
    return np.hypot(ax + tau * ex, ay + tau * ey)


def post_encroachment_time_s(enter_s: np.ndarray, exit_s: np.ndarray) -> np.ndarray:
    """PET from each car's conflict-area entry and exit times ``[..., 2]`` (NaN: has not happened).

    ``t_entry(A2) - t_exit(A1)`` with A1 the car that entered first; 0 if A2 entered before A1 left; inf if a car
    never entered (see the module docstring).

    >>> float(post_encroachment_time_s(np.array([1.0, 4.0]), np.array([2.5, 5.0])))
    1.5
    """
    e_in, o_in = enter_s[..., _EGO], enter_s[..., _OTHER]
    e_out, o_out = exit_s[..., _EGO], exit_s[..., _OTHER]
    both = ~np.isnan(e_in) & ~np.isnan(o_in)
    ego_first = e_in <= o_in
    first_out = np.where(ego_first, e_out, o_out)
    second_in = np.where(ego_first, o_in, e_in)
    overlap = both & (np.isnan(first_out) | (second_in < first_out))
    with np.errstate(invalid="ignore"):
        pet = np.where(both & ~overlap, second_in - first_out, np.inf)
    return np.where(overlap, 0.0, pet)


def ttc_along_paths_s(d_m: np.ndarray, v_mps: np.ndarray, zone_m: np.ndarray) -> np.ndarray:
    """Time-to-collision along the paths at constant speeds (module docstring): ``d_m``, ``v_mps`` ``[..., 2]``
    (travelled distance and speed of ego and other), ``zone_m`` ``[..., 2, 2]`` (their occupancy intervals).

    >>> z = np.array([[10.0, 19.0], [20.0, 29.0]])
    >>> float(ttc_along_paths_s(np.array([0.0, 0.0]), np.array([5.0, 10.0]), z))  # ego in [2, 3.8], other in [2, 2.9]
    2.0
    """
    d_in, d_out = zone_m[..., 0], zone_m[..., 1]
    before = d_m < d_in
    inside = ~before & (d_m <= d_out)
    moving = v_mps > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        to_in = np.where(moving, (d_in - d_m) / v_mps, np.inf)
        to_out = np.where(moving, (d_out - d_m) / v_mps, np.inf)
    t_in = np.where(before, to_in, np.where(inside, 0.0, np.inf))
    t_out = np.where(before | inside, to_out, -np.inf)
    start, end = t_in.max(axis=-1), t_out.min(axis=-1)
    return np.where(start < end, start, np.inf)


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


class CriticalityTracker:
    """Running criticality metrics of ``N`` scenes, updated once per decision step with that step's frames.

    Args:
        zones: ``[N, 2, 2]`` occupancy intervals (:func:`zone_array`).
        dt_s: Simulation frame length [s].

    Call :meth:`reset` with the initial states of the scenes that start an episode, then :meth:`update` after every
    step with its frames; :meth:`values` gives the running metrics. Everything is vectorised over scenes and frames.
    """

    def __init__(self, zones: np.ndarray, dt_s: float) -> None:
        self.zones = np.asarray(zones, dtype=np.float64)
        n = self.zones.shape[0]
        self.dt_s = float(dt_s)
        self._thresholds = self.zones.reshape(n, 4)  # [ego in, ego out, other in, other out]
        self._time_s = np.zeros(n)
        self._d_m = np.zeros((n, 2))
        self._xy = np.zeros((n, 2, 2))
        self._speed = np.zeros((n, 2))
        self._ego_crashed = np.zeros(n, dtype=bool)
        self._times_s = np.full((n, 4), np.nan)  # crossing times of the thresholds
        self._min_distance_m = np.full(n, np.inf)
        self._min_ttc_s = np.full(n, np.inf)
        self._peak_decel = np.zeros(n)

    @property
    def num_scenes(self) -> int:
        return self.zones.shape[0]

    def reset(self, mask: np.ndarray, states: np.ndarray) -> None:
        """Start new episodes in the scenes of ``mask`` from ``states`` ``[N, 2, 4]`` (:data:`FRAME_FIELDS`)."""
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            return
        s = states[m]
        self._time_s[m] = 0.0
        self._d_m[m] = 0.0
        self._xy[m] = s[:, :, [F_X, F_Y]]
        self._speed[m] = s[:, :, F_SPEED]
        self._ego_crashed[m] = s[:, _EGO, F_CRASHED] != 0
        times = np.where(self._thresholds[m] <= 0.0, 0.0, np.nan)  # a zone already reached at the start
        self._times_s[m] = times
        rel = s[:, _OTHER, :2] - s[:, _EGO, :2]
        self._min_distance_m[m] = np.hypot(rel[:, 0], rel[:, 1])
        self._min_ttc_s[m] = ttc_along_paths_s(self._d_m[m], self._speed[m], self.zones[m])
        self._peak_decel[m] = 0.0

    def update(self, frames: np.ndarray, present: np.ndarray) -> None:
        """Add one decision step: ``frames`` ``[N, F, 2, 4]`` the states after each frame (:data:`FRAME_FIELDS`),
        ``present`` ``[N]`` whether the other car was on the road during the step. Scenes that were reset instead
        of stepped may hold anything here; call :meth:`reset` for them afterwards."""
        dt = self.dt_s
        n_frames = frames.shape[1]
        speed = frames[..., F_SPEED]  # [N, F, 2]
        prev_speed = np.concatenate([self._speed[:, None], speed[:, :-1]], axis=1)
        prev_speed[~present, :, _OTHER] = 0.0
        # Travelled distance: the simulators move each car by speed * dt per frame (speed at the frame's start).
        d = self._d_m[:, None, :] + np.cumsum(prev_speed * dt, axis=1)  # [N, F, 2]

        # Conflict-area entry/exit: the first crossing of each threshold, interpolated within its frame.
        dd = np.concatenate([self._d_m[:, None, :], d], axis=1)[:, :, [0, 0, 1, 1]]  # [N, F + 1, 4]
        above = dd[:, 1:] >= self._thresholds[:, None, :]  # [N, F, 4]
        new = above.any(axis=1) & np.isnan(self._times_s)
        if new.any():
            k = np.argmax(above, axis=1)  # [N, 4]
            a = np.take_along_axis(dd, k[:, None, :], axis=1)[:, 0]
            b = np.take_along_axis(dd, k[:, None, :] + 1, axis=1)[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(b > a, np.clip((self._thresholds - a) / (b - a), 0.0, 1.0), 1.0)
            self._times_s = np.where(new, self._time_s[:, None] + (k + frac) * dt, self._times_s)

        # Minimum centre distance over each frame's segment.
        xy = frames[..., [F_X, F_Y]]  # [N, F, 2, 2]
        rel = xy[:, :, _OTHER] - xy[:, :, _EGO]  # [N, F, 2]
        rel_prev = np.concatenate([(self._xy[:, _OTHER] - self._xy[:, _EGO])[:, None], rel[:, :-1]], axis=1)
        seg = segment_min_distance_m(rel_prev[..., 0], rel_prev[..., 1], rel[..., 0], rel[..., 1]).min(axis=1)
        self._min_distance_m = np.where(present, np.minimum(self._min_distance_m, seg), self._min_distance_m)

        # TTC along the paths at every frame (the other car, once gone, never enters).
        v = speed.copy()
        v[~present, :, _OTHER] = 0.0
        d_ttc = d.copy()
        d_ttc[~present, :, _OTHER] = np.inf
        ttc = ttc_along_paths_s(d_ttc, v, self.zones[:, None]).min(axis=1)
        self._min_ttc_s = np.minimum(self._min_ttc_s, ttc)

        # The ego's deceleration per frame, over frames that start with the ego not crashed.
        ego_speed = speed[:, :, _EGO]
        decel = -(ego_speed - prev_speed[:, :, _EGO]) / dt
        crashed = frames[:, :, _EGO, F_CRASHED] != 0
        crashed_before = np.concatenate([self._ego_crashed[:, None], crashed[:, :-1]], axis=1)
        decel = np.where(crashed_before, 0.0, decel).max(axis=1)
        self._peak_decel = np.maximum(self._peak_decel, decel)

        self._time_s = self._time_s + n_frames * dt
        self._d_m = d[:, -1]
        self._xy = xy[:, -1].copy()
        self._speed = speed[:, -1].copy()
        self._ego_crashed = crashed[:, -1].copy()

    def values(self) -> dict[str, np.ndarray]:
        """The running metrics ``{key: [N] float64}`` (:data:`CRITICALITY_KEYS`)."""
        times = self._times_s
        pet = post_encroachment_time_s(times[:, [0, 2]], times[:, [1, 3]])
        return {
            "min_distance_m": self._min_distance_m.copy(),
            "pet_s": pet,
            "min_ttc_s": self._min_ttc_s.copy(),
            "ego_peak_decel_mps2": self._peak_decel.copy(),
        }


def recording_series(task: Any, frame_states: np.ndarray, dt_s: float) -> np.ndarray:
    """Running metrics at every frame of a recorded intersection episode: ``[F, len(CRITICALITY_KEYS)]``.

    ``frame_states`` ``[F, 2, >= 6]`` has :data:`intersection_meta.recording.STATE_FIELDS` columns (x, y, heading,
    speed, present, crashed); frame 0 is the initial state. The values at the last frame of each decision step are
    the ones the env reports after that step; the frames in between give the viewer's running values.
    """
    states = np.asarray(frame_states, dtype=np.float64)
    rows = np.stack([states[..., 0], states[..., 1], states[..., 3], states[..., 5]], axis=-1)  # [F, 2, 4]
    tracker = CriticalityTracker(zone_array([task]), dt_s)
    tracker.reset(np.ones(1, dtype=bool), rows[:1])
    out = np.empty((len(rows), len(CRITICALITY_KEYS)))
    out[0] = [v[0] for v in tracker.values().values()]
    for f in range(1, len(rows)):
        # ``present`` of frame f: whether the other car was stepped in it (highway-env removes it between steps).
        tracker.update(rows[None, f : f + 1], states[f : f + 1, _OTHER, 4] > 0.5)
        out[f] = [v[0] for v in tracker.values().values()]
    return out


def episode_values(infos: Mapping[str, Any]) -> dict[str, float]:
    """The criticality entry of a single env's step ``info`` as plain floats."""
    crit = infos["criticality"]
    return {k: float(crit[k]) for k in CRITICALITY_KEYS}
