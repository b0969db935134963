"""Native batched simulator of the two-vehicle intersection, faithful to highway-env 1.12.1.

``FastIntersectionVectorEnv(tasks, seed=...)`` simulates ``len(tasks)`` scenes at once with NumPy (float64,
the same formulas and operation order as highway-env), as a gymnasium 1.x ``VectorEnv`` with ``NEXT_STEP``
autoreset. Each scene is the reference ``TwoVehicleIntersectionEnv`` (an ego ``MDPVehicle`` and one other
vehicle, an ``IDMVehicle`` or a ``ControlledVehicle``) on highway-env's intersection road, where the
following is reproduced:

* the road network (read once from highway-env's own ``IntersectionEnv._make_road``): 20 straight and
  circular lanes, their local coordinates (bit for bit, including ``np.linalg.norm``'s fused dot product),
  headings, priorities; ``get_closest_lane_index`` (position + heading distance over every lane, first
  minimum) after every ``Vehicle.step``, exact but pruned: a vehicle keeps its lane without a scan while
  lower bounds of every other lane's distance (bounding boxes, circles, straight-lane headings, tracked
  with the distance moved; a closed form for the parallel lane of the same arm) exceed its lane's distance;
* routes (``plan_route_to``), ``follow_road``/``next_lane`` (route popping, fallback to the closest
  successor lane), ``position_heading_along_route``;
* the kinematic bicycle model (``Vehicle.step``, slip angle, speed clipping, crashed braking, impacts);
* ``ControlledVehicle`` steering/speed controllers, ``MDPVehicle`` target-speed indices (``FASTER``/``SLOWER``
  from the *current* speed), the meta-action applied at the first of the 15 frames of a decision;
* ``IDMVehicle`` with the intersection's constants (``DISTANCE_WANTED`` 7, ``COMFORT_ACC_MAX`` 6,
  ``COMFORT_ACC_MIN`` -3, ``DELTA`` 4): front vehicle searched on its current lane and, when it differs, on
  its target lane (``Road.neighbour_vehicles``, margin 1 m), gaps measured on its current lane;
* optionally (``regulated_road=True``, stock ``IntersectionEnv``; the reference env uses a plain ``Road``)
  ``RegulatedRoad.enforce_road_rules`` every ``int(1 / dt / 2)`` road steps: constant-speed trajectory
  prediction along routes, the (highway-env-exact) rotated-rectangle conflict test, lane priorities, the
  non-MDP vehicle yielding (target speed 0) and being released at the next check (target speed = lane speed
  limit);
* collisions (``RoadObject.handle_collisions`` with the spherical pre-check and the SAT polygon test,
  ``impact`` applied at the next frame, crashed flags);
* ``has_arrived``, ``_clear_vehicles`` (the other vehicle disappears from the scene and the observation once
  it is 20 m before the end of its exit lane), the stock ``_agent_reward`` / ``_rewards`` terms, and the
  normalised, clipped Kinematics observation (ego row, then the other vehicle if ``close_objects_to`` sees
  it: within 200 m, and with ``see_behind=False`` not more than 10 m behind along the ego's lane), flattened
  to float32.

Measured agreement with ``TwoVehicleIntersectionEnv`` (``benchmarks/fidelity.py``): identical outcomes and
observations equal to < 1e-12 on 1650 random-policy episodes from every shipped scenario and a broad task
sampler. The simulation is deterministic: seeds only seed ``self.np_random`` (unused by the dynamics).
Order of one decision step (as the reference): ``F = simulation_frequency // policy_frequency`` frames of
[meta-action on frame 0, every vehicle's act, (regulation), every vehicle's step, collisions], then
observation, reward, terminated/truncated, infos, then ``_clear_vehicles``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from intersection_meta.tasks import APPROACH_LANE_LENGTH_M, ENTRIES, IntersectionSettings, IntersectionTask

__all__ = [
    "ROAD_ORDER_EGO_FIRST",
    "FastIntersectionVectorEnv",
    "LaneTable",
    "lane_table",
]

#: Order of the two vehicles in ``road.vehicles`` of the reference env (it matters for the collision
#: pre-check, which uses the first vehicle's speed, and for priority ties): ``TwoVehicleIntersectionEnv``
#: uses ``[ego, other]``.
ROAD_ORDER_EGO_FIRST = True

# Vehicle / controller constants (highway_env.vehicle.*), spelled as highway-env computes them.
_LENGTH = 5.0
_WIDTH = 2.0
_DIAGONAL = float(np.sqrt(_LENGTH**2 + _WIDTH**2))
_MAX_SPEED = 40.0
_MIN_SPEED = -40.0
_TAU_ACC = 0.6
_TAU_HEADING = 0.2
_TAU_LATERAL = 0.6
_TAU_PURSUIT = 0.5 * _TAU_HEADING
_KP_A = 1 / _TAU_ACC
_KP_HEADING = 1 / _TAU_HEADING
_KP_LATERAL = 1 / _TAU_LATERAL
_MAX_STEERING_ANGLE = np.pi / 3
# IDM with IntersectionEnv's constants.
_IDM_ACC_MAX = 6.0
_IDM_COMFORT_ACC_MAX = 6.0
_IDM_COMFORT_ACC_MIN = -3.0
_IDM_DISTANCE_WANTED = 7.0
_IDM_TIME_WANTED = 1.5
_IDM_DELTA = 4.0
# Lanes.
_VEHICLE_LENGTH_LANE = 5.0  # AbstractLane.VEHICLE_LENGTH
_PERCEPTION_DISTANCE = 5.0 * _MAX_SPEED
_REGULATION_FREQUENCY = 2
_CONFLICT_TIMES = np.arange(0.25, 3, 0.25)
_EXIT_DISTANCE_M = 25.0
_OBS_RANGES = {"x": (-100.0, 100.0), "y": (-100.0, 100.0), "vx": (-20.0, 20.0), "vy": (-20.0, 20.0)}
_ACTIONS = ("SLOWER", "IDLE", "FASTER")
_EGO, _OTHER = 0, 1


@dataclass(frozen=True)
class LaneTable:
    """highway-env's intersection lanes as arrays, in ``RoadNetwork.graph`` iteration order."""

    names: tuple[tuple[str, str, int], ...]
    circular: np.ndarray  # bool
    start: np.ndarray  # (L, 2) straight lanes
    direction: np.ndarray  # (L, 2)
    direction_lateral: np.ndarray  # (L, 2)
    heading: np.ndarray  # straight lanes
    length: np.ndarray
    center: np.ndarray  # (L, 2) circular lanes
    radius: np.ndarray
    start_phase: np.ndarray
    turn: np.ndarray  # CircularLane.direction (+1 clockwise, -1 otherwise)
    width: np.ndarray
    priority: np.ndarray
    speed_limit: np.ndarray
    is_exit: np.ndarray  # "il" in from and "o" in to
    bbox: np.ndarray  # (L, 4) xmin, xmax, ymin, ymax of the lane centre curve (slightly padded)
    successors: np.ndarray  # (L, 3) lanes starting at this lane's end node, graph order, -1 padded
    from_node: tuple[str, ...]
    to_node: tuple[str, ...]
    straight_ids: np.ndarray
    circular_ids: np.ndarray
    start_x: np.ndarray
    start_y: np.ndarray
    dir_x: np.ndarray
    dir_y: np.ndarray
    lat_x: np.ndarray
    lat_y: np.ndarray
    center_x: np.ndarray
    center_y: np.ndarray
    twin: np.ndarray  # for approach/exit lanes: the opposite lane of the same arm, else -1
    packed_rows: np.ndarray  # (7, L): start_x, start_y, dir_x, dir_y, lat_x, lat_y, circular
    direction_headings: np.ndarray  # distinct straight-lane headings (rounded)
    straight_direction: (
        np.ndarray
    )  # for each straight lane (in straight_ids order), its direction_headings index
    from_id: np.ndarray  # node ids (index in sorted node names)
    to_id: np.ndarray

    def index(self, name: tuple[str, str, int]) -> int:
        return self.names.index(name)


@functools.lru_cache(maxsize=1)
def _reference_network() -> Any:
    """highway-env's intersection ``RoadNetwork``, built by ``IntersectionEnv._make_road`` itself (cached;
    treat as read-only)."""
    from highway_env.envs.intersection_env import IntersectionEnv

    env = IntersectionEnv.__new__(IntersectionEnv)
    env.config = IntersectionEnv.default_config()
    env.np_random = np.random.default_rng(0)
    IntersectionEnv._make_road(env)
    return env.road.network


@functools.lru_cache(maxsize=1)
def lane_table() -> LaneTable:
    """Extract the lane geometry from highway-env's own intersection road (built once)."""
    from highway_env.road.lane import CircularLane, StraightLane

    net = _reference_network()
    names, lanes = [], []
    for _from, to_dict in net.graph.items():
        for _to, lane_list in to_dict.items():
            for _id, lane in enumerate(lane_list):
                names.append((_from, _to, _id))
                lanes.append(lane)
    n = len(lanes)
    z2 = np.zeros((n, 2))
    start, direction, direction_lat, center = z2.copy(), z2.copy(), z2.copy(), z2.copy()
    heading, radius, start_phase, turn = np.zeros(n), np.ones(n), np.zeros(n), np.ones(n)
    circular = np.zeros(n, dtype=bool)
    bbox = np.zeros((n, 4))
    for i, lane in enumerate(lanes):
        if isinstance(lane, CircularLane):
            circular[i] = True
            center[i] = lane.center
            radius[i] = lane.radius
            start_phase[i] = lane.start_phase
            turn[i] = lane.direction
        elif isinstance(lane, StraightLane):
            start[i] = lane.start
            direction[i] = lane.direction
            direction_lat[i] = lane.direction_lateral
            heading[i] = lane.heading
        else:  # pragma: no cover - the intersection only has these two lane types
            raise TypeError(f"unsupported lane type {type(lane).__name__}")
        pts = np.array([lane.position(s, 0.0) for s in np.linspace(0.0, lane.length, 2001)])
        pad = 1e-3
        bbox[i] = (pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad, pts[:, 1].max() + pad)
    nodes = sorted({f for f, _, _ in names} | {t for _, t, _ in names})
    successors = -np.ones((n, 3), dtype=np.int64)
    for i, (_from, _to, _id) in enumerate(names):
        nxt = [names.index((_to, t, 0)) for t in net.graph.get(_to, {})]
        successors[i, : len(nxt)] = nxt
    return LaneTable(
        names=tuple(names),
        circular=circular,
        start=start,
        direction=direction,
        direction_lateral=direction_lat,
        heading=heading,
        length=np.array([lane.length for lane in lanes], dtype=np.float64),
        center=center,
        radius=radius,
        start_phase=start_phase,
        turn=turn,
        width=np.array([lane.width for lane in lanes], dtype=np.float64),
        priority=np.array([lane.priority for lane in lanes], dtype=np.int64),
        speed_limit=np.array([lane.speed_limit for lane in lanes], dtype=np.float64),
        is_exit=np.array(["il" in f and "o" in t for f, t, _ in names]),
        bbox=bbox,
        successors=successors,
        from_node=tuple(f for f, _, _ in names),
        to_node=tuple(t for _, t, _ in names),
        straight_ids=np.nonzero(~circular)[0],
        circular_ids=np.nonzero(circular)[0],
        start_x=start[:, 0].copy(),
        start_y=start[:, 1].copy(),
        dir_x=direction[:, 0].copy(),
        dir_y=direction[:, 1].copy(),
        lat_x=direction_lat[:, 0].copy(),
        lat_y=direction_lat[:, 1].copy(),
        center_x=center[:, 0].copy(),
        center_y=center[:, 1].copy(),
        twin=_twin_lanes(circular, heading, bbox, np.array([lane.length for lane in lanes])),
        packed_rows=np.ascontiguousarray(
            np.column_stack([start, direction, direction_lat, circular]).T.astype(np.float64)
        ),
        direction_headings=_direction_groups(heading[~circular])[0],
        straight_direction=_direction_groups(heading[~circular])[1],
        from_id=np.array([nodes.index(f) for f, _, _ in names]),
        to_id=np.array([nodes.index(t) for _, t, _ in names]),
    )


def _direction_groups(headings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct headings (up to 1e-6; the first lane's exact value) and each heading's group index."""
    reps: list[float] = []
    group = np.zeros(len(headings), dtype=np.int64)
    for i, h in enumerate(headings):
        for g, r in enumerate(reps):
            if abs(_wrap_to_pi(np.array(h - r))) < 1e-6:
                group[i] = g
                break
        else:
            reps.append(float(h))
            group[i] = len(reps) - 1
    return np.array(reps), group


def _twin_lanes(
    circular: np.ndarray, heading: np.ndarray, bbox: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """For each long straight lane, the parallel opposite-direction lane of the same arm (-1 if none)."""
    twin = -np.ones(len(circular), dtype=np.int64)
    arm = np.nonzero(~circular & (length > 50))[0]
    for i in arm:
        for j in arm:
            opposite = abs(abs(_wrap_to_pi(np.array(heading[i] - heading[j]))) - np.pi) < 1e-6
            gap = max(
                bbox[j, 0] - bbox[i, 1],
                bbox[i, 0] - bbox[j, 1],
                bbox[j, 2] - bbox[i, 3],
                bbox[i, 2] - bbox[j, 3],
            )
            if i != j and opposite and gap < 5:
                twin[i] = j
    return twin


@functools.cache
def _route(lane: int, destination: str) -> tuple[int, ...]:
    """``ControlledVehicle.plan_route_to``: the current lane, then the BFS shortest path's roads."""
    tab = lane_table()
    net = _reference_network()
    try:
        path = net.shortest_path(tab.to_node[lane], destination)
    except KeyError:
        path = []
    return (lane, *tuple(tab.index((path[i], path[i + 1], 0)) for i in range(len(path) - 1)))


# ----------------------------------------------------------------------------------------------------------
# Lane geometry, vectorised over arbitrary arrays of lane indices.
# ----------------------------------------------------------------------------------------------------------
def _wrap_to_pi(x: np.ndarray) -> np.ndarray:
    """``utils.wrap_to_pi``: ``((x + pi) % (2 pi)) - pi``, bit for bit.

    For ``a = x + pi`` in ``[-2 pi, 2 pi)`` NumPy's float remainder is ``a`` or ``a + 2 pi`` (exact ``fmod``
    there), so only arrays with other values go through the (slow) ``np.remainder``.
    """
    two_pi = 2 * np.pi
    a = np.add(x, np.pi)
    if a.size and (a.min() < -two_pi or a.max() >= two_pi):
        return np.remainder(a, two_pi) - np.pi
    if not isinstance(a, np.ndarray):  # 0-d input
        return (a + (a < 0) * two_pi) - np.pi
    # In place: a + 2 pi where a < 0; elsewhere a (``a + 0.0`` only differs on -0.0, which gives the
    # same result after subtracting pi).
    np.add(a, two_pi, out=a, where=a < 0)
    a -= np.pi
    return a


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's exact product: ``p + e == a * b`` exactly, ``p = fl(a * b)``."""
    p = a * b
    split = 134217729.0  # 2**27 + 1 (Veltkamp splitting)
    ca = split * a
    a_hi = ca - (ca - a)
    a_lo = a - a_hi
    cb = split * b
    b_hi = cb - (cb - b)
    b_lo = b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def _dot2(u0: np.ndarray, u1: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """``np.dot([u0, u1], [w0, w1])`` bit for bit: NumPy's BLAS dot of two elements is
    ``fma(u1, w1, u0 * w0)`` on FMA hardware; the fused multiply-add is emulated exactly (TwoProduct +
    TwoSum). Where the dot is not fused, the plain sum is used."""
    c = u0 * w0
    if not _dot_is_fused():
        return c + u1 * w1
    p, e = _two_product(u1, w1)
    s = p + c
    bb = s - p
    t = (p - (s - bb)) + (c - bb)
    return s + (t + e)


def _norm2(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``np.linalg.norm([dx, dy])`` bit for bit (NumPy computes ``sqrt(dot(v, v))``)."""
    return np.sqrt(_dot2(dx, dy, dx, dy))


@functools.lru_cache(maxsize=1)
def _dot_is_fused() -> bool:
    """Whether ``np.linalg.norm`` of a 2-vector rounds like a fused multiply-add (decided on a sample)."""
    rng = np.random.default_rng(0)
    v = rng.uniform(-20, 20, size=(256, 2))
    ref = np.array([np.linalg.norm(x) for x in v])
    plain = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1])
    return not np.array_equal(ref, plain)


def _not_zero(x: np.ndarray, eps: float = 1e-2) -> np.ndarray:
    return np.where(np.abs(x) > eps, x, np.where(x >= 0, eps, -eps))


def _local_coordinates(
    tab: LaneTable, lane: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``lane.local_coordinates(position)`` for each element (straight or circular)."""
    g = np.take(tab.packed_rows, lane, axis=1)  # start_x, start_y, dir_x, dir_y, lat_x, lat_y, circular
    dx = x - g[0]
    dy = y - g[1]
    s = dx * g[2] + dy * g[3]
    r = dx * g[4] + dy * g[5]
    ci = np.flatnonzero(g[6])
    if ci.size:
        ln = lane.reshape(-1)[ci]
        cdx = x.reshape(-1)[ci] - tab.center_x[ln]
        cdy = y.reshape(-1)[ci] - tab.center_y[ln]
        sp = tab.start_phase[ln]
        phi = sp + _wrap_to_pi(np.arctan2(cdy, cdx) - sp)
        rho = _norm2(cdx, cdy)
        turn = tab.turn[ln]
        radius = tab.radius[ln]
        s.reshape(-1)[ci] = turn * (phi - sp) * radius
        r.reshape(-1)[ci] = turn * (radius - rho)
    return s, r


def _heading_at(tab: LaneTable, lane: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = tab.heading[lane]
    ci = np.flatnonzero(tab.circular[lane])
    if ci.size:
        ln = lane.reshape(-1)[ci]
        turn = tab.turn[ln]
        phi = turn * s.reshape(-1)[ci] / tab.radius[ln] + tab.start_phase[ln]
        out.reshape(-1)[ci] = phi + np.pi / 2 * turn
    return out


def _position(tab: LaneTable, lane: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lane.position(s, 0)``."""
    turn = tab.turn[lane]
    phi = turn * s / tab.radius[lane] + tab.start_phase[lane]
    rad = tab.radius[lane]
    circ = tab.circular[lane]
    x = np.where(
        circ, tab.center[lane, 0] + rad * np.cos(phi), tab.start[lane, 0] + s * tab.direction[lane, 0]
    )
    y = np.where(
        circ, tab.center[lane, 1] + rad * np.sin(phi), tab.start[lane, 1] + s * tab.direction[lane, 1]
    )
    return x, y


def _lane_lower_bound(tab: LaneTable, x: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(K, L) lower bounds of ``lane.distance_with_heading`` for every lane.

    The position part of a lane distance (``|r| + max(s - length, 0) + max(-s, 0)``) is the length of a path
    from the point to the lane's centre curve, hence at least the Euclidean distance to the curve, itself at
    least the Chebyshev distance to the curve's bounding box and, for arcs, the distance to the circle
    ``| |p - c| - R |``. The heading part is exact for straight lanes (constant heading) and >= 0 for arcs.
    Each bound is 1-Lipschitz in ``|dx| + |dy| + |dheading|``.
    """
    bb = tab.bbox
    ox = np.maximum(np.maximum(bb[:, 0] - x[:, None], x[:, None] - bb[:, 1]), 0.0)
    oy = np.maximum(np.maximum(bb[:, 2] - y[:, None], y[:, None] - bb[:, 3]), 0.0)
    lower = np.maximum(ox, oy)
    S, C = tab.straight_ids, tab.circular_ids
    # Straight-lane heading terms from the 4 distinct headings (lanes of one direction differ by < 1e-12).
    per_direction = np.abs(_wrap_to_pi(h[:, None] - tab.direction_headings)) - 1e-9
    lower[:, S] += np.take(per_direction, tab.straight_direction, axis=1)
    cdx = x[:, None] - tab.center[C, 0]
    cdy = y[:, None] - tab.center[C, 1]
    lower[:, C] = np.maximum(lower[:, C], np.abs(np.sqrt(cdx * cdx + cdy * cdy) - tab.radius[C]))
    return lower


def _arc_heading_bound(tab: LaneTable, x: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(K, C) lower bounds of the heading term of ``distance_with_heading`` for the circular lanes.

    The term is the angle ``theta`` in [0, pi] between the heading and the arc's tangent at the point's
    angular position; the chord ``|e_h - t| = 2 sin(theta / 2) <= theta`` needs no ``arctan2``. Points
    within 1e-6 m of an arc's centre get 0.
    """
    C = tab.circular_ids
    cdx = x[:, None] - tab.center[C, 0]
    cdy = y[:, None] - tab.center[C, 1]
    rho = np.sqrt(cdx * cdx + cdy * cdy)
    ok = rho > 1e-6
    inv = tab.turn[C] / np.where(ok, rho, 1.0)
    ex = np.cos(h)[:, None] + cdy * inv  # e_h - t, t = turn * (-cdy, cdx) / rho
    ey = np.sin(h)[:, None] - cdx * inv
    chord = np.sqrt(ex * ex + ey * ey) - 1e-9
    return np.where(ok, np.maximum(chord, 0.0), 0.0)


def _closest_lane_full(tab: LaneTable, x: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``RoadNetwork.get_closest_lane_index``: first argmin of ``distance_with_heading`` over all lanes."""
    d = np.empty((x.size, len(tab.names)))
    S, C = tab.straight_ids, tab.circular_ids
    xs, ys, hs = x[:, None], y[:, None], h[:, None]
    dx = xs - tab.start[S, 0]
    dy = ys - tab.start[S, 1]
    s = dx * tab.direction[S, 0] + dy * tab.direction[S, 1]
    r = dx * tab.direction_lateral[S, 0] + dy * tab.direction_lateral[S, 1]
    angle = np.abs(_wrap_to_pi(hs - tab.heading[S]))
    d[:, S] = np.abs(r) + np.maximum(s - tab.length[S], 0) + np.maximum(0 - s, 0) + 1.0 * angle
    cdx = xs - tab.center[C, 0]
    cdy = ys - tab.center[C, 1]
    sp, turn, radius = tab.start_phase[C], tab.turn[C], tab.radius[C]
    phi = sp + _wrap_to_pi(np.arctan2(cdy, cdx) - sp)
    rho = _norm2(cdx, cdy)
    s = turn * (phi - sp) * radius
    r = turn * (radius - rho)
    psi = (turn * s / radius + sp) + np.pi / 2 * turn
    angle = np.abs(_wrap_to_pi(hs - psi))
    d[:, C] = np.abs(r) + np.maximum(s - tab.length[C], 0) + np.maximum(0 - s, 0) + 1.0 * angle
    return np.argmin(d, axis=1)


#: A vehicle on an approach/exit lane p with |r| + |heading error| below this cannot be closer to p's twin
#: (the opposite lane 4 m away on the same arm): d_twin >= d_p + (4 + pi) - 2 (|r| + |err|), see the tests.
_TWIN_SAFE = 3.5


def _closest_lane(
    tab: LaneTable,
    x: np.ndarray,
    y: np.ndarray,
    h: np.ndarray,
    prev: np.ndarray,
    margin: np.ndarray,
    d_prev: np.ndarray,
    twin_safe: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``get_closest_lane_index`` for vehicles that were on lane ``prev``, pruned.

    Args:
        prev: each vehicle's previous closest lane; ``d_prev`` its exact ``distance_with_heading`` now.
        margin: a lower bound of the distance of every lane other than ``prev`` and its twin:
            :func:`_lane_lower_bound` at the last check minus the ``|dx| + |dy| + |dheading|`` moved since.
        twin_safe: the twin lane (if any) is provably farther than ``prev`` (see ``_TWIN_SAFE``).

    A vehicle keeps ``prev`` without any scan while ``margin > d_prev`` and ``twin_safe``; otherwise the
    bounds are recomputed and, if still ambiguous, all lanes are scanned.

    Returns:
        (lanes, new margins).
    """
    lanes, margin = prev.copy(), margin.copy()
    idx = np.nonzero((margin <= d_prev + 1e-9) | ~twin_safe)[0]
    if idx.size:
        lower = _lane_lower_bound(tab, x[idx], y[idx], h[idx])
        rows = np.arange(idx.size)
        new = prev[idx].copy()
        prev_bound = lower[rows, new]
        lower[rows, new] = np.inf
        ambiguous = (lower <= d_prev[idx, None] + 1e-9).any(axis=1)
        cand = np.nonzero(ambiguous)[0]
        if cand.size:
            # Sharper arc bounds (heading chord) decide most of them; they are not 1-Lipschitz near an
            # arc's centre, so the margins kept for the next frames use ``lower`` only.
            j = idx[cand]
            sharper = lower[cand]
            sharper[:, tab.circular_ids] += _arc_heading_bound(tab, x[j], y[j], h[j])
            ambiguous[cand] = (sharper <= d_prev[j, None] + 1e-9).any(axis=1)
        full = np.nonzero(ambiguous)[0]
        if full.size:
            j = idx[full]
            new[full] = _closest_lane_full(tab, x[j], y[j], h[j])
            lower[full, prev[j]] = prev_bound[full]
            lower[full, new[full]] = np.inf
        twin = tab.twin[new]
        has_twin = twin >= 0
        lower[rows[has_twin], twin[has_twin]] = np.inf
        lanes[idx] = new
        margin[idx] = lower.min(axis=1)
    return lanes, margin


# ----------------------------------------------------------------------------------------------------------
# Task -> initial scene.
# ----------------------------------------------------------------------------------------------------------
_INTENT_OFFSET = {"right": -1, "straight": 2, "left": 1}


def _destination(entry: int, intent: str) -> str:
    if intent not in _INTENT_OFFSET:
        raise ValueError(f"unknown intent {intent!r}; allowed: {sorted(_INTENT_OFFSET)}")
    return f"o{(entry + _INTENT_OFFSET[intent]) % 4}"


def _entry_index(entry: str) -> int:
    if entry not in ENTRIES:
        raise ValueError(f"unknown entry {entry!r}; allowed: {list(ENTRIES)}")
    return ENTRIES.index(entry)


def _check_settings(tasks: Sequence[IntersectionTask]) -> IntersectionSettings:
    if len(tasks) == 0:
        raise ValueError("FastIntersectionVectorEnv needs at least one task")
    from intersection_meta.envs.intersection import validate_task  # the reference env's own checks

    for t in tasks:
        if not isinstance(t, IntersectionTask):
            raise TypeError(
                f"FastIntersectionVectorEnv takes IntersectionTask values, got {type(t).__name__}"
            )
        validate_task(t)
    s0 = tasks[0].settings
    if s0.action != "discrete":
        raise ValueError(
            "the fast backend only simulates the discrete meta-action space (settings.action='discrete')"
        )
    for f in s0.observation_features:
        if f not in ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h"):
            raise ValueError(f"observation feature {f!r} is not supported by the fast backend")
    for t in tasks[1:]:
        s = t.settings
        same = (
            s.policy_frequency_hz == s0.policy_frequency_hz
            and s.simulation_frequency_hz == s0.simulation_frequency_hz
            and s.action == s0.action
            and tuple(s.target_speeds_mps) == tuple(s0.target_speeds_mps)
            and tuple(s.observation_features) == tuple(s0.observation_features)
            and s.observation_absolute == s0.observation_absolute
        )
        if not same:
            raise ValueError(
                "all tasks of a FastIntersectionVectorEnv must share their settings (only reward weights and "
                "durations may differ); "
                f"task {t.task_id} differs from task {tasks[0].task_id}"
            )
    return s0


# ----------------------------------------------------------------------------------------------------------
# The vector env.
# ----------------------------------------------------------------------------------------------------------
class FastIntersectionVectorEnv(VectorEnv):
    """N two-vehicle intersection scenes simulated together with NumPy (see the module docstring).

    Args:
        tasks: one ``IntersectionTask`` per sub-env (they must share their settings except reward weights and
            durations).
        seed: optional seed of ``self.np_random`` (the dynamics are deterministic).
        regulated_road: simulate highway-env's ``RegulatedRoad`` right-of-way rules (stock
            ``IntersectionEnv``); the reference ``TwoVehicleIntersectionEnv`` uses a plain ``Road`` (False).
        see_behind: Kinematics ``see_behind`` (the reference env sets True; stock highway-env is False, which
            hides the other vehicle when it is more than 10 m behind the ego along the ego's lane).

    Observations are float32 arrays ``(num_envs, 2 * n_features)``; actions are integers in {0 SLOWER,
    1 IDLE, 2 FASTER}. ``step`` infos hold ``crashed``, ``arrived``, ``speed`` and ``rewards`` (a dict of
    reward-term arrays), each with gymnasium's ``_key`` mask.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        tasks: Sequence[IntersectionTask],
        seed: int | None = None,
        *,
        regulated_road: bool = False,
        see_behind: bool = True,
    ) -> None:
        self.tasks = tuple(tasks)
        self._regulated = bool(regulated_road)
        self._see_behind = bool(see_behind)
        settings = _check_settings(self.tasks)
        self.settings = settings
        self.num_envs = len(self.tasks)
        self.render_mode = None
        self._tab = lane_table()
        self._features = tuple(settings.observation_features)
        n_feat = len(self._features)
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2 * n_feat,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(len(_ACTIONS))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._frames = int(settings.simulation_frequency_hz // settings.policy_frequency_hz)
        self._dt = 1 / settings.simulation_frequency_hz
        self._regulation_every = int(1 / self._dt / _REGULATION_FREQUENCY)
        self._target_speeds = np.asarray(settings.target_speeds_mps, dtype=np.float64)
        self._build_initial_state()
        self._state: dict[str, np.ndarray] = {}
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)

    # --- initial state --------------------------------------------------------------------------------------
    def _build_initial_state(self) -> None:
        tab = self._tab
        n = self.num_envs
        lane0 = np.zeros((n, 2), dtype=np.int64)
        s0 = np.zeros((n, 2))
        speed = np.zeros((n, 2))
        dest: list[tuple[str, str]] = []
        idm = np.zeros(n, dtype=bool)
        w = np.zeros((n, 3))
        speed_range = np.zeros((n, 2))
        normalize = np.zeros(n, dtype=bool)
        for i, t in enumerate(self.tasks):
            ke, ko = _entry_index(t.ego_entry), _entry_index(t.other_entry)
            lane0[i] = (tab.index((f"o{ke}", f"ir{ke}", 0)), tab.index((f"o{ko}", f"ir{ko}", 0)))
            s0[i] = (
                APPROACH_LANE_LENGTH_M - t.ego_distance_to_stop_m,
                APPROACH_LANE_LENGTH_M - t.other_distance_to_stop_m,
            )
            speed[i] = (t.ego_speed_mps, t.other_speed_mps)
            dest.append((_destination(ke, t.ego_intent), _destination(ko, t.other_intent)))
            idm[i] = t.other_driver == "idm"
            r = t.settings.rewards
            w[i] = (r.collision_reward, r.high_speed_reward, r.arrived_reward)
            speed_range[i] = r.reward_speed_range_mps
            normalize[i] = r.normalize_reward
        x, y = _position(tab, lane0, s0)
        heading = _heading_at(tab, lane0, s0)
        lane = _closest_lane_full(tab, x.ravel(), y.ravel(), heading.ravel()).reshape(n, 2)
        planned = [[_route(int(lane[i, v]), dest[i][v]) for v in range(2)] for i in range(n)]
        width = max(len(rt) for pair in planned for rt in pair) + 1
        routes = -np.ones((n, 2, width), dtype=np.int64)
        route_len = np.zeros((n, 2), dtype=np.int64)
        for i in range(n):
            for v in range(2):
                rt = planned[i][v]
                routes[i, v, : len(rt)] = rt
                route_len[i, v] = len(rt)
        # MDPVehicle.__init__: target speed = closest allowed target speed to the initial speed.
        ego_index = self._speed_to_index(speed[:, _EGO])
        target_speed = speed.copy()
        target_speed[:, _EGO] = self._target_speeds[ego_index]
        self._init = {
            "x": x,
            "y": y,
            "heading": heading,
            "speed": speed,
            "lane": lane,
            "target_lane": lane.copy(),
            "route_ptr": np.zeros((n, 2), dtype=np.int64),
            "target_speed": target_speed,
            "speed_index": ego_index,
        }
        self._routes = routes
        self._route_len = route_len
        self._idm = idm
        self._duration_s = np.array([t.settings.duration_s for t in self.tasks], dtype=np.float64)
        self._idm_scenes = np.flatnonzero(idm)
        self._reward_w = w
        self._speed_range = speed_range
        self._normalize_reward = normalize

    def _speed_to_index(self, speed: np.ndarray) -> np.ndarray:
        ts = self._target_speeds
        xs = (speed - ts[0]) / (ts[-1] - ts[0])
        return np.clip(np.round(xs * (ts.size - 1)), 0, ts.size - 1).astype(np.int64)

    def _reset_scenes(self, mask: np.ndarray) -> None:
        st, init, n = self._state, self._init, self.num_envs
        if not st:
            st.update(
                x=np.zeros((n, 2)),
                y=np.zeros((n, 2)),
                heading=np.zeros((n, 2)),
                speed=np.zeros((n, 2)),
                lane=np.zeros((n, 2), dtype=np.int64),
                target_lane=np.zeros((n, 2), dtype=np.int64),
                route_ptr=np.zeros((n, 2), dtype=np.int64),
                target_speed=np.zeros((n, 2)),
                speed_index=np.zeros(n, dtype=np.int64),
                steering=np.zeros((n, 2)),
                acceleration=np.zeros((n, 2)),
                crashed=np.zeros((n, 2), dtype=bool),
                impact=np.zeros((n, 2, 2)),
                has_impact=np.zeros((n, 2), dtype=bool),
                present=np.ones(n, dtype=bool),
                yielding=np.zeros(n, dtype=bool),
                road_steps=np.zeros(n, dtype=np.int64),
                time=np.zeros(n),
                elapsed_steps=np.zeros(n, dtype=np.int64),
                lane_margin=np.zeros((n, 2)),
            )
        for k, v in init.items():
            st[k][mask] = v[mask]
        for k in ("steering", "acceleration", "impact", "time"):
            st[k][mask] = 0
        for k in ("crashed", "has_impact", "yielding"):
            st[k][mask] = False
        st["present"][mask] = True
        st["lane_margin"][mask] = -np.inf
        self._lane_ref = {"x": st["x"].copy(), "y": st["y"].copy(), "heading": st["heading"].copy()}
        self._lanes_stale = False
        st["road_steps"][mask] = 0
        st["elapsed_steps"][mask] = 0

    # --- gymnasium API -------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        if isinstance(seed, (list, tuple)):
            seed = seed[0] if seed else None
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        mask = np.ones(self.num_envs, dtype=bool)
        unknown = set(options or {}) - {"reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['reset_mask']")
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if not self._state:
                raise ValueError("the first reset must reset every sub-env (no reset_mask)")
        self._reset_scenes(mask)
        self._needs_reset[mask] = False
        obs = self._observe()
        infos = self._infos(np.ones(self.num_envs, dtype=bool))
        return obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._state:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions).reshape(-1)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {np.shape(actions)}")
        if np.any((actions < 0) | (actions >= len(_ACTIONS))):
            raise ValueError(f"actions must be in [0, {len(_ACTIONS) - 1}], got {actions}")
        autoreset = self._needs_reset.copy()
        st = self._state
        for frame in range(self._frames):
            self._frame(actions.astype(np.int64) if frame == 0 else None)
        self._update_lanes()
        st["time"] += 1 / self.settings.policy_frequency_hz
        st["elapsed_steps"] += 1
        obs = self._observe()
        rewards, terms = self._reward_terms()
        crashed = st["crashed"][:, _EGO].copy()
        arrived = terms["arrived_reward"].astype(bool)
        terminated = crashed | arrived
        truncated = st["time"] >= self._duration_s
        infos = self._infos(np.ones(self.num_envs, dtype=bool), terms=terms, crashed=crashed, arrived=arrived)
        self._clear_vehicles()
        if autoreset.any():
            self._reset_scenes(autoreset)
            obs[autoreset] = self._observe()[autoreset]
            rewards[autoreset] = 0.0
            terminated[autoreset] = False
            truncated[autoreset] = False
            reset_infos = self._infos(autoreset)
            for k, v in infos.items():
                if isinstance(v, dict):
                    for kk in v:
                        v[kk][autoreset] = reset_infos[k][kk][autoreset]
                elif not k.startswith("_"):
                    v[autoreset] = reset_infos[k][autoreset]
        self._needs_reset = terminated | truncated
        return obs, rewards, terminated, truncated, infos

    # --- simulation ----------------------------------------------------------------------------------------
    def _follow_road(self, active: np.ndarray, s: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``ControlledVehicle.follow_road`` for the (scene, vehicle) pairs in ``active``.

        Args:
            s, r: every vehicle's local coordinates on its target lane.

        Returns:
            The local coordinates on the (possibly new) target lanes.
        """
        st, tab = self._state, self._tab
        due = active & (s > tab.length[st["target_lane"]] - _VEHICLE_LENGTH_LANE / 2)
        if due.any():
            self._next_lanes(*np.nonzero(due))
            s, r = s.copy(), r.copy()
            tl = st["target_lane"][due]
            s[due], r[due] = _local_coordinates(tab, tl, st["x"][due], st["y"][due])
        return s, r

    def _next_lanes(self, i: np.ndarray, v: np.ndarray) -> None:
        """``RoadNetwork.next_lane`` for the vehicles ``(i, v)``: the common case (the next road of the
        route starts where the current lane ends) vectorised, anything else through :meth:`_next_lane`."""
        st, tab = self._state, self._tab
        cur = st["target_lane"][i, v]
        ptr = st["route_ptr"][i, v]
        rlen = self._route_len[i, v]
        routes = self._routes[i, v]
        width = routes.shape[1]
        rows = np.arange(i.size)
        head = routes[rows, np.minimum(ptr, width - 1)]
        ptr2 = ptr + ((ptr < rlen) & (head == cur))
        head2 = routes[rows, np.minimum(ptr2, width - 1)]
        ok = (ptr2 < rlen) & (tab.from_id[np.maximum(head2, 0)] == tab.to_id[cur])
        st["route_ptr"][i[ok], v[ok]] = ptr2[ok]
        st["target_lane"][i[ok], v[ok]] = head2[ok]
        for a, b in zip(i[~ok], v[~ok], strict=True):
            self._next_lane(int(a), int(b))

    def _next_lane(self, i: int, v: int) -> None:
        """``RoadNetwork.next_lane`` with the vehicle's route (scalar: lane switches are rare events)."""
        st, tab = self._state, self._tab
        cur = int(st["target_lane"][i, v])
        ptr, rlen = int(st["route_ptr"][i, v]), int(self._route_len[i, v])
        route = self._routes[i, v]
        nxt = -1
        if ptr < rlen and int(route[ptr]) == cur:
            ptr += 1
        if ptr < rlen and tab.from_node[int(route[ptr])] == tab.to_node[cur]:
            nxt = int(route[ptr])
        st["route_ptr"][i, v] = ptr
        if nxt < 0:
            lane = np.array([cur])
            s, _ = _local_coordinates(tab, lane, st["x"][i, v : v + 1], st["y"][i, v : v + 1])
            px, py = _position(tab, lane, s)
            cands = tab.successors[cur][tab.successors[cur] >= 0]
            if cands.size == 0:
                return
            cs, cr = _local_coordinates(tab, cands, np.repeat(px, cands.size), np.repeat(py, cands.size))
            dist = np.abs(cr) + np.maximum(cs - tab.length[cands], 0) + np.maximum(0 - cs, 0)
            nxt = int(cands[int(np.argmin(dist))])
        st["target_lane"][i, v] = nxt

    def _steering(self, s: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``ControlledVehicle.steering_control(target_lane_index)`` for every vehicle, given the local
        coordinates ``(s, r)`` of each vehicle on its target lane."""
        st, tab = self._state, self._tab
        tl = st["target_lane"]
        speed, heading = st["speed"], st["heading"]
        future_heading = _heading_at(tab, tl, s + speed * _TAU_PURSUIT)
        lateral_speed_command = -_KP_LATERAL * r
        nz = _not_zero(speed)
        heading_command = np.arcsin(np.clip(lateral_speed_command / nz, -1, 1))
        heading_ref = future_heading + np.clip(heading_command, -np.pi / 4, np.pi / 4)
        heading_rate_command = _KP_HEADING * _wrap_to_pi(heading_ref - heading)
        slip_angle = np.arcsin(np.clip(_LENGTH / 2 / nz * heading_rate_command, -1, 1))
        steering = np.arctan(2 * np.tan(slip_angle))
        return np.clip(steering, -_MAX_STEERING_ANGLE, _MAX_STEERING_ANGLE)

    def _idm_acceleration(self, k: np.ndarray) -> np.ndarray:
        """``IDMVehicle.act`` longitudinal part for the other vehicle of the scenes ``k``."""
        st, tab = self._state, self._tab
        x, y, heading, spd = st["x"][k], st["y"][k], st["heading"][k], st["speed"][k]
        ox, oy, ex, ey = x[:, _OTHER], y[:, _OTHER], x[:, _EGO], y[:, _EGO]
        lane = st["lane"][k, _OTHER]
        target_lane = st["target_lane"][k, _OTHER]
        speed, sp_e = spd[:, _OTHER], spd[:, _EGO]
        h_o, h_e = heading[:, _OTHER], heading[:, _EGO]
        target = np.clip(st["target_speed"][k, _OTHER], 0, tab.speed_limit[lane])
        free = _IDM_COMFORT_ACC_MAX * (
            1 - np.power(np.maximum(speed, 0) / np.abs(_not_zero(target)), _IDM_DELTA)
        )
        # Gap along the current lane (lane_distance_to) and the desired gap (desired_gap, projected).
        s_self, _ = _local_coordinates(tab, lane, ox, oy)
        s_ego, lat_ego = _local_coordinates(tab, lane, ex, ey)
        d = s_ego - s_self
        cos_o, sin_o = np.cos(h_o), np.sin(h_o)
        dv = _dot2(speed * cos_o - sp_e * np.cos(h_e), speed * sin_o - sp_e * np.sin(h_e), cos_o, sin_o)
        d_star = (
            _IDM_DISTANCE_WANTED
            + speed * _IDM_TIME_WANTED
            + speed * dv / (2 * np.sqrt(-_IDM_COMFORT_ACC_MAX * _IDM_COMFORT_ACC_MIN))
        )
        with_front = free - _IDM_COMFORT_ACC_MAX * np.power(d_star / _not_zero(d), 2)
        present = st["present"][k]

        def front_on(
            search_lane: np.ndarray, s_v: np.ndarray, lat_v: np.ndarray, s: np.ndarray
        ) -> np.ndarray:
            on = (
                (np.abs(lat_v) <= tab.width[search_lane] / 2 + 1)
                & (-_VEHICLE_LENGTH_LANE <= s_v)
                & (s_v < tab.length[search_lane] + _VEHICLE_LENGTH_LANE)
            )
            return on & (s <= s_v)

        # The ego is always on the road while this vehicle acts (only the other vehicle can be cleared).
        front = front_on(lane, s_ego, lat_ego, s_self)
        acc = np.where(front, with_front, free)
        diff = (lane != target_lane) & present
        if diff.any():
            idx = np.nonzero(diff)[0]
            tl = target_lane[idx]
            s_t, _ = _local_coordinates(tab, tl, ox[idx], oy[idx])
            s_et, lat_et = _local_coordinates(tab, tl, ex[idx], ey[idx])
            front_t = front_on(tl, s_et, lat_et, s_t)
            acc_t = np.where(front_t, with_front[idx], free[idx])
            acc[idx] = np.minimum(acc[idx], acc_t)
        return np.clip(acc, -_IDM_ACC_MAX, _IDM_ACC_MAX)

    def _update_lanes(self, s: np.ndarray | None = None, r: np.ndarray | None = None) -> None:
        """``Vehicle.on_state_update``: every vehicle's closest lane at its current position and heading.

        ``(s, r)``: the vehicles' local coordinates on their target lanes, if known (they are reused where the
        target lane is the current lane).
        """
        st, tab = self._state, self._tab
        if not self._lanes_stale:
            return
        lane, x, y, h = st["lane"], st["x"], st["y"], st["heading"]
        if s is None:
            s, r = _local_coordinates(tab, lane, x, y)
        else:
            other = lane != st["target_lane"]
            if other.any():
                s, r = s.copy(), r.copy()
                s[other], r[other] = _local_coordinates(tab, lane[other], x[other], y[other])
        angle = np.abs(_wrap_to_pi(h - _heading_at(tab, lane, s)))
        length = tab.length[lane]
        d_prev = np.abs(r) + np.maximum(s - length, 0) + np.maximum(0 - s, 0) + 1.0 * angle
        twin_safe = (tab.twin[lane] < 0) | (np.abs(r) + angle < _TWIN_SAFE)
        moved = (
            np.abs(x - self._lane_ref["x"])
            + np.abs(y - self._lane_ref["y"])
            + np.abs(h - self._lane_ref["heading"])
        )
        new_lane, margin = _closest_lane(
            tab,
            x.ravel(),
            y.ravel(),
            h.ravel(),
            lane.ravel(),
            (st["lane_margin"] - moved).ravel(),
            d_prev.ravel(),
            twin_safe.ravel(),
        )
        n = self.num_envs
        st["lane"] = new_lane.reshape(n, 2)
        st["lane_margin"] = margin.reshape(n, 2)
        self._lane_ref = {"x": x, "y": y, "heading": h}
        self._lanes_stale = False

    def _frame(self, meta_actions: np.ndarray | None) -> None:
        """One ``simulation_frequency`` frame of ``AbstractEnv._simulate`` for every scene."""
        st, tab = self._state, self._tab
        n = self.num_envs
        crashed = st["crashed"]
        any_crashed = bool(crashed.any())
        idm = self._idm
        # Lane update of the previous frame's Vehicle.step, sharing the target-lane coordinates.
        s_target, r_target = _local_coordinates(tab, st["target_lane"], st["x"], st["y"])
        self._update_lanes(s_target, r_target)
        # Vehicles that run ControlledVehicle.act (a crashed IDMVehicle returns early).
        acting = np.ones((n, 2), dtype=bool)
        if any_crashed:
            acting[:, _OTHER] = ~(idm & crashed[:, _OTHER])
        present = st["present"]
        all_present = bool(present.all())
        if not all_present:
            acting[:, _OTHER] &= present
        if meta_actions is not None:
            # action_type.act(action): MDPVehicle.act(meta-action) (its follow_road), then road.act() below.
            cur_index = self._speed_to_index(st["speed"][:, _EGO])
            new_index = np.where(
                meta_actions == 2, cur_index + 1, np.where(meta_actions == 0, cur_index - 1, -1)
            )
            change = meta_actions != 1
            new_index = np.clip(new_index, 0, self._target_speeds.size - 1)
            st["speed_index"] = np.where(change, new_index, st["speed_index"])
            st["target_speed"][:, _EGO] = np.where(
                change, self._target_speeds[st["speed_index"]], st["target_speed"][:, _EGO]
            )
            ego_only = np.zeros((n, 2), dtype=bool)
            ego_only[:, _EGO] = True
            s_target, r_target = self._follow_road(ego_only, s_target, r_target)
        # road.act()
        s_target, r_target = self._follow_road(acting, s_target, r_target)
        steering = self._steering(s_target, r_target)
        acceleration = _KP_A * (st["target_speed"] - st["speed"])
        if self._idm_scenes.size:
            acceleration[self._idm_scenes, _OTHER] = self._idm_acceleration(self._idm_scenes)
        # Vehicle.clip_actions (a crashed vehicle brakes to a stop, wheels straight).
        speed = st["speed"]
        if any_crashed:
            steering = np.where(crashed, 0.0, steering)
            acceleration = np.where(crashed, -1.0 * speed, acceleration)
        if not all_present:
            # A vehicle removed by _clear_vehicles no longer exists in highway-env; here it stays parked
            # (zero speed and inputs), outside every interaction and observation.
            steering[~present, _OTHER] = 0.0
            acceleration[~present, _OTHER] = 0.0
        if speed.max() > _MAX_SPEED or speed.min() < _MIN_SPEED:
            acceleration = np.where(
                speed > _MAX_SPEED, np.minimum(acceleration, 1.0 * (_MAX_SPEED - speed)), acceleration
            )
            acceleration = np.where(
                speed < _MIN_SPEED, np.maximum(acceleration, 1.0 * (_MIN_SPEED - speed)), acceleration
            )
        # road.step(dt): regulation, vehicle dynamics, collisions.
        st["road_steps"] += 1
        if self._regulated:
            regulate = (st["road_steps"] % self._regulation_every) == 0
            if regulate.any():
                self._enforce_road_rules(regulate)
        self._dynamics(steering, acceleration)
        self._collisions()

    def _dynamics(self, steering: np.ndarray, acceleration: np.ndarray) -> None:
        """``Vehicle.step(dt)`` (kinematic bicycle) for every vehicle; the lane update is deferred to
        :meth:`_update_lanes` (same state, so the same result)."""
        st, dt = self._state, self._dt
        speed, heading = st["speed"], st["heading"]
        beta = np.arctan(1 / 2 * np.tan(steering))
        st["x"] = st["x"] + speed * np.cos(heading + beta) * dt
        st["y"] = st["y"] + speed * np.sin(heading + beta) * dt
        hit = st["has_impact"]
        if hit.any():
            st["x"] = np.where(hit, st["x"] + st["impact"][..., 0], st["x"])
            st["y"] = np.where(hit, st["y"] + st["impact"][..., 1], st["y"])
            st["crashed"] = st["crashed"] | hit
            st["has_impact"] = np.zeros_like(hit)
        st["heading"] = heading + speed * np.sin(beta) / (_LENGTH / 2) * dt
        st["speed"] = speed + acceleration * dt
        self._lanes_stale = True

    def _road_order(self) -> tuple[int, int]:
        return (_EGO, _OTHER) if ROAD_ORDER_EGO_FIRST else (_OTHER, _EGO)

    def _collisions(self) -> None:
        """``Road.step`` collision pass: ``first.handle_collisions(second, dt)`` on the scenes with both."""
        st, dt = self._state, self._dt
        a, b = self._road_order()
        dx = st["x"][:, b] - st["x"][:, a]
        dy = st["y"][:, b] - st["y"][:, a]
        threshold = (_DIAGONAL + _DIAGONAL) / 2 + st["speed"][:, a] * dt
        # Cheap candidates first (Chebyshev distance <= Euclidean), then highway-env's exact test.
        idx = np.flatnonzero(st["present"] & (np.maximum(np.abs(dx), np.abs(dy)) <= threshold))
        if idx.size:
            idx = idx[_norm2(dx[idx], dy[idx]) <= threshold[idx]]
        if idx.size:
            idx = idx[~_surely_separated(st, idx, a, b, dt)]
        if idx.size == 0:
            return
        poly_a = _polygons(st["x"][idx, a], st["y"][idx, a], st["heading"][idx, a])
        poly_b = _polygons(st["x"][idx, b], st["y"][idx, b], st["heading"][idx, b])
        disp_a = _velocity(st["speed"][idx, a], st["heading"][idx, a]) * dt
        disp_b = _velocity(st["speed"][idx, b], st["heading"][idx, b]) * dt
        intersecting, will, translation = _polygons_intersecting(poly_a, poly_b, disp_a, disp_b)
        w = idx[will]
        st["impact"][w, a] = translation[will] / 2
        st["impact"][w, b] = -translation[will] / 2
        st["has_impact"][w, a] = True
        st["has_impact"][w, b] = True
        hit = idx[intersecting]
        st["crashed"][hit, a] = True
        st["crashed"][hit, b] = True

    def _predict(self, idx: np.ndarray, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``ControlledVehicle.predict_trajectory_constant_speed`` at the conflict-check times."""
        st, tab = self._state, self._tab
        lane = st["lane"][idx, v]
        s0, _ = _local_coordinates(tab, lane, st["x"][idx, v], st["y"][idx, v])
        ptr = st["route_ptr"][idx, v]
        rlen = self._route_len[idx, v]
        has_route = ptr < rlen
        routes = self._routes[idx, v]
        k = idx.size
        # Remaining route (or [current lane]) as lanes, -1 padded.
        width = routes.shape[1]
        pos = ptr[:, None] + np.arange(width)[None, :]
        rem = np.where(
            pos < rlen[:, None], np.take_along_axis(routes, np.minimum(pos, width - 1), axis=1), -1
        )
        only_lane = np.full((k, width), -1, dtype=np.int64)
        only_lane[:, 0] = lane
        rem = np.where(has_route[:, None], rem, only_lane)
        longitudinal = s0[:, None] + st["speed"][idx, v][:, None] * _CONFLICT_TIMES[None, :]
        cur = np.repeat(rem[:, :1], _CONFLICT_TIMES.size, axis=1)
        j = np.zeros_like(cur)
        for _ in range(width - 1):
            nxt_j = np.minimum(j + 1, width - 1)
            nxt = np.take_along_axis(rem, nxt_j, axis=1)
            advance = (j < width - 1) & (nxt >= 0) & (longitudinal > tab.length[cur])
            longitudinal = np.where(advance, longitudinal - tab.length[cur], longitudinal)
            cur = np.where(advance, nxt, cur)
            j = np.where(advance, nxt_j, j)
        px, py = _position(tab, cur, longitudinal)
        return px, py, _heading_at(tab, cur, longitudinal)

    def _enforce_road_rules(self, regulate: np.ndarray) -> None:
        """``RegulatedRoad.enforce_road_rules`` on the scenes in ``regulate``."""
        st, tab = self._state, self._tab
        release = regulate & st["yielding"]
        if release.any():
            st["target_speed"][release, _OTHER] = tab.speed_limit[st["lane"][release, _OTHER]]
            st["yielding"][release] = False
        idx = np.nonzero(regulate & st["present"])[0]
        if idx.size == 0:
            return
        a, b = self._road_order()
        ax, ay, ah = self._predict(idx, a)
        bx, by, bh = self._predict(idx, b)
        close = ~(_norm2(bx - ax, by - ay) > _LENGTH)
        conflict = np.zeros(idx.size, dtype=bool)
        rows = np.nonzero(close.any(axis=1))[0]
        if rows.size:
            r_a = (ax[rows], ay[rows], ah[rows])
            r_b = (bx[rows], by[rows], bh[rows])
            inter = _rectangles_intersect(r_a, r_b, 1.5 * _LENGTH, 0.9 * _WIDTH)
            conflict[rows] = (inter & close[rows]).any(axis=1)
        cidx = idx[conflict]
        if cidx.size == 0:
            return
        pa = tab.priority[st["lane"][cidx, a]]
        pb = tab.priority[st["lane"][cidx, b]]
        # respect_priorities(first, second): lower priority yields, else the vehicle behind yields.
        fa = _front_distance(st, cidx, a, b)
        fb = _front_distance(st, cidx, b, a)
        first_yields = np.where(pa > pb, False, np.where(pa < pb, True, fa > fb))
        yielder = np.where(first_yields, a, b)
        y = cidx[yielder == _OTHER]
        st["target_speed"][y, _OTHER] = 0.0
        st["yielding"][y] = True

    def _clear_vehicles(self) -> None:
        st, tab = self._state, self._tab
        lane = st["lane"][:, _OTHER]
        s, _ = _local_coordinates(tab, lane, st["x"][:, _OTHER], st["y"][:, _OTHER])
        leaving = tab.is_exit[lane] & (s >= tab.length[lane] - 4 * _LENGTH) & st["present"]
        st["present"] &= ~leaving
        st["speed"][leaving, _OTHER] = 0.0

    # --- observation, reward, infos ------------------------------------------------------------------------
    def _observe(self) -> np.ndarray:
        st, tab = self._state, self._tab
        n = self.num_envs
        rows = np.zeros((n, 2, len(self._features)))
        ex, ey = st["x"][:, _EGO], st["y"][:, _EGO]
        lane = st["lane"][:, _EGO]
        ox, oy = st["x"][:, _OTHER], st["y"][:, _OTHER]
        dist = _norm2(ox - ex, oy - ey)
        seen = st["present"] & (dist < _PERCEPTION_DISTANCE)
        if not self._see_behind:
            s_ego, _ = _local_coordinates(tab, lane, ex, ey)
            s_oth, _ = _local_coordinates(tab, lane, ox, oy)
            seen &= -2 * _LENGTH < s_oth - s_ego
        cos_h, sin_h = np.cos(st["heading"]), np.sin(st["heading"])
        values = {
            "presence": np.ones((n, 2)),
            "x": st["x"],
            "y": st["y"],
            "vx": st["speed"] * cos_h,
            "vy": st["speed"] * sin_h,
            "cos_h": cos_h,
            "sin_h": sin_h,
        }
        for j, f in enumerate(self._features):
            col = values[f].copy()
            if not self.settings.observation_absolute and f in ("x", "y", "vx", "vy"):
                col[:, _OTHER] = col[:, _OTHER] - col[:, _EGO]
            if f in _OBS_RANGES:
                lo, hi = _OBS_RANGES[f]
                col = -1 + (col - lo) * (1 - (-1)) / (hi - lo)
                col = np.clip(col, -1, 1)
            rows[:, :, j] = col
        rows[~seen, _OTHER, :] = 0.0
        return rows.reshape(n, -1).astype(np.float32)

    def _reward_terms(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        st, tab = self._state, self._tab
        lane = st["lane"][:, _EGO]
        s, r = _local_coordinates(tab, lane, st["x"][:, _EGO], st["y"][:, _EGO])
        arrived = tab.is_exit[lane] & (s >= _EXIT_DISTANCE_M)
        on_road = (
            (np.abs(r) <= tab.width[lane] / 2)
            & (-_VEHICLE_LENGTH_LANE <= s)
            & (s < tab.length[lane] + _VEHICLE_LENGTH_LANE)
        )
        lo, hi = self._speed_range[:, 0], self._speed_range[:, 1]
        scaled = 0 + (st["speed"][:, _EGO] - lo) * (1 - 0) / (hi - lo)
        crashed = st["crashed"][:, _EGO]
        terms = {
            "collision_reward": crashed.astype(np.float64),
            "high_speed_reward": np.clip(scaled, 0, 1),
            "arrived_reward": arrived.astype(np.float64),
            "on_road_reward": on_road.astype(np.float64),
        }
        w = self._reward_w
        reward = 0 + w[:, 0] * terms["collision_reward"] + w[:, 1] * terms["high_speed_reward"]
        reward = reward + w[:, 2] * terms["arrived_reward"]
        reward = np.where(arrived, w[:, 2], reward)
        reward = reward * terms["on_road_reward"]
        norm = -1 * 0 + 0 + (reward - w[:, 0]) * (1 - 0) / (w[:, 2] - w[:, 0])
        reward = np.where(self._normalize_reward, norm, reward)
        return reward.astype(np.float64), terms

    def _infos(
        self,
        mask: np.ndarray,
        terms: dict[str, np.ndarray] | None = None,
        crashed: np.ndarray | None = None,
        arrived: np.ndarray | None = None,
    ) -> dict[str, Any]:
        st = self._state
        if terms is None:
            _, terms = self._reward_terms()
        if crashed is None:
            crashed = st["crashed"][:, _EGO].copy()
        if arrived is None:
            arrived = terms["arrived_reward"].astype(bool)
        m = mask.copy()
        return {
            "crashed": crashed,
            "_crashed": m,
            "arrived": arrived,
            "_arrived": m.copy(),
            "speed": st["speed"][:, _EGO].copy(),
            "_speed": m.copy(),
            "rewards": {**{k: v.copy() for k, v in terms.items()}, **{"_" + k: m.copy() for k in terms}},
            "_rewards": m.copy(),
        }

    # --- introspection (tests, fidelity tools) -------------------------------------------------------------
    def vehicle_state(self) -> dict[str, np.ndarray]:
        """A copy of the simulator state arrays (``(num_envs, 2)``: ego then other)."""
        return {k: v.copy() for k, v in self._state.items()}


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers (vectorised over a leading batch axis).
# ----------------------------------------------------------------------------------------------------------
def _velocity(speed: np.ndarray, heading: np.ndarray) -> np.ndarray:
    return np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)


def _front_distance(st: dict[str, np.ndarray], idx: np.ndarray, v: int, w: int) -> np.ndarray:
    """``v.front_distance_to(w)`` = direction_v . (p_w - p_v)."""
    h = st["heading"][idx, v]
    return _dot2(np.cos(h), np.sin(h), st["x"][idx, w] - st["x"][idx, v], st["y"][idx, w] - st["y"][idx, v])


def _surely_separated(st: dict[str, np.ndarray], idx: np.ndarray, a: int, b: int, dt: float) -> np.ndarray:
    """Scenes of ``idx`` whose two vehicles' swept rectangles are separated by more than 1e-6 m along an
    edge normal (then ``_polygons_intersecting`` finds neither an intersection nor a future one).

    Closed-form rectangle projections on the 4 distinct edge directions (opposite edges give the same
    test); rounding errors (~1e-13 m) are far below the 1e-6 m slack. The swept interval contains the
    static one, so swept separation implies static separation.
    """
    xa, ya, ha, va = st["x"][idx, a], st["y"][idx, a], st["heading"][idx, a], st["speed"][idx, a]
    xb, yb, hb, vb = st["x"][idx, b], st["y"][idx, b], st["heading"][idx, b], st["speed"][idx, b]
    ca, sa, cb, sb = np.cos(ha), np.sin(ha), np.cos(hb), np.sin(hb)
    ddx = (va * ca - vb * cb) * dt
    ddy = (va * sa - vb * sb) * dt
    px, py = xb - xa, yb - ya
    hl, hw = _LENGTH / 2, _WIDTH / 2
    separated = np.zeros(idx.size, dtype=bool)
    for nx, ny in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
        ra = hl * np.abs(ca * nx + sa * ny) + hw * np.abs(-sa * nx + ca * ny)
        rb = hl * np.abs(cb * nx + sb * ny) + hw * np.abs(-sb * nx + cb * ny)
        center_b = px * nx + py * ny  # relative to a's centre
        vp = ddx * nx + ddy * ny
        min_a, max_a = -ra + np.minimum(vp, 0.0), ra + np.maximum(vp, 0.0)
        gap = np.where(min_a < center_b - rb, center_b - rb - max_a, min_a - (center_b + rb))
        separated |= gap > 1e-6
    return separated


def _polygons(x: np.ndarray, y: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """``RoadObject.polygon()`` without the closing point: (K, 4, 2)."""
    pts = np.array(
        [
            [-_LENGTH / 2, -_WIDTH / 2],
            [-_LENGTH / 2, _WIDTH / 2],
            [_LENGTH / 2, _WIDTH / 2],
            [_LENGTH / 2, -_WIDTH / 2],
        ]
    )
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    px = c * pts[None, :, 0] + (-s) * pts[None, :, 1] + x[:, None]
    py = s * pts[None, :, 0] + c * pts[None, :, 1] + y[:, None]
    return np.stack([px, py], axis=-1)


def _interval_distance(
    min_a: np.ndarray, max_a: np.ndarray, min_b: np.ndarray, max_b: np.ndarray
) -> np.ndarray:
    return np.where(min_a < min_b, min_b - max_a, min_a - max_b)


def _polygons_intersecting(
    a: np.ndarray, b: np.ndarray, disp_a: np.ndarray, disp_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``utils.are_polygons_intersecting`` (separating axis test) for K polygon pairs (K, 4, 2)."""
    normals = []
    for poly in (a, b):
        p1 = poly
        p2 = np.roll(poly, -1, axis=1)
        nrm = np.stack([-p2[..., 1] + p1[..., 1], p2[..., 0] - p1[..., 0]], axis=-1)
        normals.append(nrm / _norm2(nrm[..., 0], nrm[..., 1])[..., None])
    normals = np.concatenate(normals, axis=1)  # (K, 8, 2)
    nx, ny = normals[:, :, None, 0], normals[:, :, None, 1]
    proj_a = _dot2(a[:, None, :, 0], a[:, None, :, 1], nx, ny)  # (K, 8, 4): p.dot(normal)
    proj_b = _dot2(b[:, None, :, 0], b[:, None, :, 1], nx, ny)
    min_a, max_a = proj_a.min(axis=2), proj_a.max(axis=2)
    min_b, max_b = proj_b.min(axis=2), proj_b.max(axis=2)
    intersecting = ~(_interval_distance(min_a, max_a, min_b, max_b) > 0).any(axis=1)
    dd = disp_a - disp_b
    vp = _dot2(normals[:, :, 0], normals[:, :, 1], dd[:, None, 0], dd[:, None, 1])
    min_a = np.where(vp < 0, min_a + vp, min_a)
    max_a = np.where(vp < 0, max_a, max_a + vp)
    distance = _interval_distance(min_a, max_a, min_b, max_b)
    will = ~(distance > 0).any(axis=1)
    k = np.argmin(np.abs(distance), axis=1)
    axis = normals[np.arange(a.shape[0]), k]
    d = a.mean(axis=1) - b.mean(axis=1)
    sign = np.where(_dot2(d[:, 0], d[:, 1], axis[:, 0], axis[:, 1]) > 0, 1.0, -1.0)
    translation = np.abs(distance[np.arange(a.shape[0]), k])[:, None] * sign[:, None] * axis
    return intersecting, will, translation


def _rect_points(length: float, width: float) -> np.ndarray:
    hl, hw = length / 2, width / 2
    return np.array(
        [[-hl, -hw], [-hl, hw], [hl, hw], [hl, -hw], [0.0, 0.0], [-hl, 0.0], [hl, 0.0], [0.0, -hw], [0.0, hw]]
    )


def _has_corner_inside(r1: tuple, r2: tuple, length: float, width: float) -> np.ndarray:
    """``utils.has_corner_inside`` (with highway-env's rotation convention) for (K, T) rectangles."""
    x1, y1, h1 = r1
    x2, y2, h2 = r2
    pts = _rect_points(length, width)
    c1, s1 = np.cos(h1)[..., None], np.sin(h1)[..., None]
    px = c1 * pts[:, 0] - s1 * pts[:, 1] + x1[..., None]
    py = s1 * pts[:, 0] + c1 * pts[:, 1] + y1[..., None]
    c2, s2 = np.cos(h2)[..., None], np.sin(h2)[..., None]
    dx, dy = px - x2[..., None], py - y2[..., None]
    ru_x = c2 * dx - s2 * dy
    ru_y = s2 * dx + c2 * dy
    inside = (-length / 2 <= ru_x) & (ru_x <= length / 2) & (-width / 2 <= ru_y) & (ru_y <= width / 2)
    return inside.any(axis=-1)


def _rectangles_intersect(r1: tuple, r2: tuple, length: float, width: float) -> np.ndarray:
    return _has_corner_inside(r1, r2, length, width) | _has_corner_inside(r2, r1, length, width)
