"""The compiled per-step simulation of N two-vehicle intersection scenes (numba, no ``fastmath``).

One scene is highway-env 1.12.1's ``TwoVehicleIntersectionEnv``: an ego (``MDPVehicle`` for discrete
meta-actions, or a route-following vehicle with a commanded acceleration for continuous actions) and one
other vehicle (``IDMVehicle`` with the intersection's constants, or a ``ControlledVehicle``) on the
intersection road (:mod:`.road`). Each scene is simulated by scalar code, with the same formulas and
operation order as highway-env; a batch is a loop over scenes (``prange`` in :func:`step_parallel`).

Order of one decision step (as the reference): ``frames`` simulation frames of [action on frame 0, every
vehicle's ``act`` (``follow_road``, steering, speed or IDM control), ``Vehicle.step`` (kinematic bicycle,
impacts), ``get_closest_lane_index``, collisions], then observation, reward terms, terminated/truncated,
then ``_clear_vehicles``. A scene flagged ``NEEDS_RESET`` is reset instead of stepped (``NEXT_STEP``
autoreset).

State layout (arrays owned by the VectorEnv wrapper, mutated in place):

* ``vf`` (N, 2, ``NVF``) float64 and ``vi`` (N, 2, ``NVI``) int64: per vehicle (0 ego, 1 other), columns
  ``V_*`` / ``VI_*`` below;
* ``sf`` (N, ``NSF``) float64 and ``si`` (N, ``NSI``) int64: per scene, columns ``S_*`` / ``SI_*``;
* ``params`` (N, ``NP``) float64: per-scene constants, columns ``P_*``: the other driver's IDM parameters
  (the task's hidden time headway, minimum gap and maximum acceleration; the other constants are highway-env's
  intersection values), reward weights and the episode duration.

Exactness: ``np.dot`` / ``np.linalg.norm`` go through :func:`.numerics.dot2`; ``cos``/``sin`` are libm's and
equal NumPy's on this machine; ``tan``, ``arctan``, ``arcsin``, ``arctan2`` and ``power`` are libm's, while
NumPy (hence highway-env) uses its own SIMD versions on AVX-512 machines, which differ in the last bit on
a few percent of arguments (see ``benchmarks/fidelity.py`` for the resulting observation errors).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from intersection_meta.envs.fast.collision import VEHICLE_LENGTH_M, is_colliding
from intersection_meta.envs.fast.numerics import (
    asin,
    atan,
    clip,
    dot2,
    norm2,
    not_zero,
    round_half_even,
    sin,
    tan,
    wrap_to_pi,
)
from intersection_meta.envs.fast.road import (
    L_BBOX_XMAX,
    L_BBOX_XMIN,
    L_BBOX_YMAX,
    L_BBOX_YMIN,
    L_CENTER_X,
    L_CENTER_Y,
    L_CIRCULAR,
    L_DIR_X,
    L_DIR_Y,
    L_HEADING,
    L_IS_EXIT,
    L_LAT_X,
    L_LAT_Y,
    L_LENGTH,
    L_RADIUS,
    L_SPEED_LIMIT,
    L_START_PHASE,
    L_START_X,
    L_START_Y,
    L_TURN,
    L_WIDTH,
)

# Vehicle float columns. V_TRIG_ANGLE, V_COS, V_SIN: the last angle whose cosine and sine were computed
# (NaN: none), reused while a vehicle's heading does not change (most frames on straight lanes).
V_X, V_Y, V_HEADING, V_SPEED, V_TARGET_SPEED, V_IMPACT_X, V_IMPACT_Y, V_COMMANDED_ACC = range(8)
V_TRIG_ANGLE, V_COS, V_SIN = 8, 9, 10
NVF = 11
# Vehicle int columns.
VI_LANE, VI_TARGET_LANE, VI_ROUTE_PTR, VI_CRASHED, VI_HAS_IMPACT = range(5)
NVI = 5
# Scene columns.
S_TIME = 0
NSF = 1
SI_PRESENT, SI_SPEED_INDEX, SI_NEEDS_RESET = range(3)
NSI = 3
# Per-scene parameters.
(
    P_OTHER_IS_IDM,
    P_IDM_DISTANCE_WANTED_M,
    P_IDM_TIME_WANTED_S,
    P_IDM_ACC_MAX_MPS2,
    P_IDM_COMFORT_ACC_MAX_MPS2,
    P_IDM_COMFORT_ACC_MIN_MPS2,
    P_IDM_DELTA,
    P_W_COLLISION,
    P_W_HIGH_SPEED,
    P_W_ARRIVED,
    P_SPEED_LO_MPS,
    P_SPEED_HI_MPS,
    P_NORMALIZE_REWARD,
    P_DURATION_S,
    P_EGO_MIN_SPEED_MPS,
    P_EGO_MAX_SPEED_MPS,
) = range(16)
NP = 16
# Rows of the float64 output ``out_f`` (rows, N): the reward, the reward terms, the ego's speed.
O_REWARD, O_COLLISION, O_HIGH_SPEED, O_ARRIVED, O_ON_ROAD, O_SPEED = range(6)
NOF = 6
REWARD_TERMS = ("collision_reward", "high_speed_reward", "arrived_reward", "on_road_reward")
REWARD_TERM_ROWS = (O_COLLISION, O_HIGH_SPEED, O_ARRIVED, O_ON_ROAD)
# Rows of the bool output ``out_b`` (rows, N); B_OTHER_SEEN: the other car's observation row is not zero padding.
B_TERMINATED, B_TRUNCATED, B_CRASHED, B_ARRIVED, B_OTHER_SEEN = range(5)
NOB = 5
# Observation feature codes. The conflict features' columns are left 0 here: the VectorEnv fills them from the
# criticality tracker after the step (it holds the travelled distances; intersection_meta.criticality).
FEATURES = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h", "conflict_distance", "conflict_time")
F_PRESENCE, F_X, F_Y, F_VX, F_VY, F_COS_H, F_SIN_H, F_CONFLICT_DISTANCE, F_CONFLICT_TIME = range(9)

EGO, OTHER = 0, 1
# highway_env.vehicle constants, spelled as highway-env computes them.
VEHICLE_MAX_SPEED_MPS = 40.0  # Vehicle.MAX_SPEED (the continuous-action ego gets ContinuousAction's speed_range)
VEHICLE_MIN_SPEED_MPS = -40.0
_TAU_ACC = 0.6
_TAU_HEADING = 0.2
_TAU_LATERAL = 0.6
_TAU_PURSUIT = 0.5 * _TAU_HEADING
_KP_A = 1 / _TAU_ACC
_KP_HEADING = 1 / _TAU_HEADING
_KP_LATERAL = 1 / _TAU_LATERAL
_MAX_STEERING_ANGLE = np.pi / 3
_LANE_VEHICLE_LENGTH = 5.0  # AbstractLane.VEHICLE_LENGTH
_PERCEPTION_DISTANCE = 5.0 * VEHICLE_MAX_SPEED_MPS
_EXIT_DISTANCE_M = 25.0
_POSITION_RANGE = 100.0  # observation x/y range [-100, 100]
_VELOCITY_RANGE = 20.0  # observation vx/vy range [-20, 20]


# ----------------------------------------------------------------------------------------------------------
# Lanes.
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def local_coordinates(geo: np.ndarray, lane: int, x: float, y: float, fused: bool) -> tuple[float, float]:
    """``lane.local_coordinates((x, y))``: (longitudinal, lateral)."""
    if geo[lane, L_CIRCULAR] == 0.0:
        dx = x - geo[lane, L_START_X]
        dy = y - geo[lane, L_START_Y]
        return dx * geo[lane, L_DIR_X] + dy * geo[lane, L_DIR_Y], dx * geo[lane, L_LAT_X] + dy * geo[lane, L_LAT_Y]
    cdx = x - geo[lane, L_CENTER_X]
    cdy = y - geo[lane, L_CENTER_Y]
    sp = geo[lane, L_START_PHASE]
    turn = geo[lane, L_TURN]
    radius = geo[lane, L_RADIUS]
    phi = sp + wrap_to_pi(math.atan2(cdy, cdx) - sp)
    rho = norm2(cdx, cdy, fused)
    return turn * (phi - sp) * radius, turn * (radius - rho)


@njit(cache=True, _nrt=False)
def heading_at(geo: np.ndarray, lane: int, s: float) -> float:
    """``lane.heading_at(s)``."""
    if geo[lane, L_CIRCULAR] == 0.0:
        return geo[lane, L_HEADING]
    turn = geo[lane, L_TURN]
    phi = turn * s / geo[lane, L_RADIUS] + geo[lane, L_START_PHASE]
    return phi + np.pi / 2 * turn


@njit(cache=True, _nrt=False)
def position(geo: np.ndarray, lane: int, s: float) -> tuple[float, float]:
    """``lane.position(s, 0)``."""
    if geo[lane, L_CIRCULAR] == 0.0:
        return geo[lane, L_START_X] + s * geo[lane, L_DIR_X], geo[lane, L_START_Y] + s * geo[lane, L_DIR_Y]
    turn = geo[lane, L_TURN]
    radius = geo[lane, L_RADIUS]
    phi = turn * s / radius + geo[lane, L_START_PHASE]
    return geo[lane, L_CENTER_X] + radius * math.cos(phi), geo[lane, L_CENTER_Y] + radius * math.sin(phi)


@njit(cache=True, _nrt=False)
def lane_distance(geo: np.ndarray, lane: int, x: float, y: float, h: float, fused: bool) -> float:
    """``lane.distance_with_heading((x, y), h)`` (heading weight 1)."""
    s, r = local_coordinates(geo, lane, x, y, fused)
    angle = abs(wrap_to_pi(h - heading_at(geo, lane, s)))
    return abs(r) + max(s - geo[lane, L_LENGTH], 0.0) + max(0.0 - s, 0.0) + 1.0 * angle


@njit(cache=True, _nrt=False)
def closest_lane(geo: np.ndarray, x: float, y: float, h: float, prev: int, fused: bool) -> int:
    """``RoadNetwork.get_closest_lane_index``: the first lane of minimal ``distance_with_heading``.

    Exact, pruned: starting from ``prev`` (the vehicle's last lane, or -1), a lane is evaluated only if lower
    bounds of its distance (Chebyshev distance to the bounding box of its centre curve; for arcs, the
    distance to the circle) do not exceed the best distance so far by more than 1e-9 (bounds are exact up
    to ~1e-13 of rounding).
    """
    best = np.inf
    best_lane = -1
    if prev >= 0:
        best = lane_distance(geo, prev, x, y, h, fused)
        best_lane = prev
    for j in range(geo.shape[0]):
        if j == prev:
            continue
        ox = max(max(geo[j, L_BBOX_XMIN] - x, x - geo[j, L_BBOX_XMAX]), 0.0)
        oy = max(max(geo[j, L_BBOX_YMIN] - y, y - geo[j, L_BBOX_YMAX]), 0.0)
        if max(ox, oy) > best + 1e-9:
            continue
        if geo[j, L_CIRCULAR] != 0.0:
            cdx = x - geo[j, L_CENTER_X]
            cdy = y - geo[j, L_CENTER_Y]
            if abs(math.sqrt(cdx * cdx + cdy * cdy) - geo[j, L_RADIUS]) > best + 1e-9:
                continue
        d = lane_distance(geo, j, x, y, h, fused)
        if d < best or (d == best and j < best_lane):
            best = d
            best_lane = j
    return best_lane


@njit(cache=True)
def init_poses(
    geo: np.ndarray, lane0: np.ndarray, s0: np.ndarray, fused: bool, vf: np.ndarray, vi: np.ndarray
) -> None:
    """Vehicles placed at ``s0`` on lanes ``lane0`` (N, 2): position, heading and closest lane into the
    ``vf`` / ``vi`` columns (``make_on_lane`` / ``Vehicle.__init__``)."""
    for i in range(lane0.shape[0]):
        for v in range(2):
            x, y = position(geo, lane0[i, v], s0[i, v])
            h = heading_at(geo, lane0[i, v], s0[i, v])
            vf[i, v, V_X] = x
            vf[i, v, V_Y] = y
            vf[i, v, V_HEADING] = h
            lane = closest_lane(geo, x, y, h, -1, fused)
            vi[i, v, VI_LANE] = lane
            vi[i, v, VI_TARGET_LANE] = lane


# ----------------------------------------------------------------------------------------------------------
# Vehicles.
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def cos_sin(vf: np.ndarray, i: int, v: int, angle: float) -> tuple[float, float]:
    """``(cos(angle), sin(angle))``, from vehicle ``(i, v)``'s one-entry cache when ``angle`` repeats."""
    if angle != vf[i, v, V_TRIG_ANGLE]:
        vf[i, v, V_TRIG_ANGLE] = angle
        vf[i, v, V_COS] = math.cos(angle)
        vf[i, v, V_SIN] = math.sin(angle)
    return vf[i, v, V_COS], vf[i, v, V_SIN]



@njit(cache=True, _nrt=False)
def speed_to_index(speed: float, target_speeds: np.ndarray) -> int:
    """``MDPVehicle.speed_to_index``."""
    k = target_speeds.size
    xs = (speed - target_speeds[0]) / (target_speeds[k - 1] - target_speeds[0])
    return int(clip(round_half_even(xs * (k - 1)), 0.0, k - 1.0))


@njit(cache=True, _nrt=False)
def _follow_road(
    i: int,
    v: int,
    vf: np.ndarray,
    vi: np.ndarray,
    routes: np.ndarray,
    route_len: np.ndarray,
    geo: np.ndarray,
    successors: np.ndarray,
    from_id: np.ndarray,
    to_id: np.ndarray,
    fused: bool,
) -> None:
    """``ControlledVehicle.follow_road``: when the end of the target lane is near, ``RoadNetwork.next_lane``
    with the vehicle's route (pop the current road, follow the route if its next road starts here, else the
    successor lane closest to the projected position)."""
    cur = vi[i, v, VI_TARGET_LANE]
    s, _ = local_coordinates(geo, cur, vf[i, v, V_X], vf[i, v, V_Y], fused)
    if s <= geo[cur, L_LENGTH] - _LANE_VEHICLE_LENGTH / 2:
        return
    ptr = vi[i, v, VI_ROUTE_PTR]
    rlen = route_len[i, v]
    nxt = -1
    if ptr < rlen and routes[i, v, ptr] == cur:
        ptr += 1
    if ptr < rlen and from_id[routes[i, v, ptr]] == to_id[cur]:
        nxt = routes[i, v, ptr]
    vi[i, v, VI_ROUTE_PTR] = ptr
    if nxt < 0:
        px, py = position(geo, cur, s)
        best = np.inf
        for k in range(successors.shape[1]):
            cand = successors[cur, k]
            if cand < 0:
                break
            cs, cr = local_coordinates(geo, cand, px, py, fused)
            dist = abs(cr) + max(cs - geo[cand, L_LENGTH], 0.0) + max(0.0 - cs, 0.0)
            if dist < best:
                best = dist
                nxt = cand
        if nxt < 0:
            return
    vi[i, v, VI_TARGET_LANE] = nxt


@njit(cache=True, _nrt=False)
def _steering(i: int, v: int, vf: np.ndarray, vi: np.ndarray, geo: np.ndarray, fused: bool) -> float:
    """``ControlledVehicle.steering_control(target_lane_index)``, clipped to the maximal steering angle."""
    tl = vi[i, v, VI_TARGET_LANE]
    speed = vf[i, v, V_SPEED]
    s, r = local_coordinates(geo, tl, vf[i, v, V_X], vf[i, v, V_Y], fused)
    future_heading = heading_at(geo, tl, s + speed * _TAU_PURSUIT)
    lateral_speed_command = -_KP_LATERAL * r
    nz = not_zero(speed)
    heading_command = asin(clip(lateral_speed_command / nz, -1.0, 1.0))
    heading_ref = future_heading + clip(heading_command, -np.pi / 4, np.pi / 4)
    heading_rate_command = _KP_HEADING * wrap_to_pi(heading_ref - vf[i, v, V_HEADING])
    slip_angle = asin(clip(VEHICLE_LENGTH_M / 2 / nz * heading_rate_command, -1.0, 1.0))
    steering = atan(2 * tan(slip_angle))
    return clip(steering, -_MAX_STEERING_ANGLE, _MAX_STEERING_ANGLE)


@njit(cache=True, _nrt=False)
def _front_on(geo: np.ndarray, lane: int, s_front: float, lat_front: float, s_self: float) -> bool:
    """Whether the vehicle at local ``(s_front, lat_front)`` of ``lane`` is on it and not behind ``s_self``
    (``Road.neighbour_vehicles`` front search, margin 1 m)."""
    on = (
        abs(lat_front) <= geo[lane, L_WIDTH] / 2 + 1
        and -_LANE_VEHICLE_LENGTH <= s_front
        and s_front < geo[lane, L_LENGTH] + _LANE_VEHICLE_LENGTH
    )
    return on and s_self <= s_front


@njit(cache=True, _nrt=False)
def _idm_acceleration(
    i: int, vf: np.ndarray, vi: np.ndarray, params: np.ndarray, geo: np.ndarray, fused: bool
) -> float:
    """``IDMVehicle.act``'s acceleration for the other vehicle (the ego is its only possible front vehicle),
    with the scene's IDM parameters."""
    acc_max = params[i, P_IDM_ACC_MAX_MPS2]
    comfort_max = params[i, P_IDM_COMFORT_ACC_MAX_MPS2]
    comfort_min = params[i, P_IDM_COMFORT_ACC_MIN_MPS2]
    ox, oy, h_o, speed = vf[i, OTHER, V_X], vf[i, OTHER, V_Y], vf[i, OTHER, V_HEADING], vf[i, OTHER, V_SPEED]
    ex, ey, h_e, sp_e = vf[i, EGO, V_X], vf[i, EGO, V_Y], vf[i, EGO, V_HEADING], vf[i, EGO, V_SPEED]
    lane = vi[i, OTHER, VI_LANE]
    target_lane = vi[i, OTHER, VI_TARGET_LANE]
    target = clip(vf[i, OTHER, V_TARGET_SPEED], 0.0, geo[lane, L_SPEED_LIMIT])
    free = comfort_max * (1 - math.pow(max(speed, 0.0) / abs(not_zero(target)), params[i, P_IDM_DELTA]))
    # Gap along the current lane (lane_distance_to) and the projected desired gap (desired_gap).
    s_self, _ = local_coordinates(geo, lane, ox, oy, fused)
    s_ego, lat_ego = local_coordinates(geo, lane, ex, ey, fused)
    d = s_ego - s_self
    cos_o, sin_o = cos_sin(vf, i, OTHER, h_o)
    cos_e, sin_e = cos_sin(vf, i, EGO, h_e)
    dv = dot2(speed * cos_o - sp_e * cos_e, speed * sin_o - sp_e * sin_e, cos_o, sin_o, fused)
    d_star = (
        params[i, P_IDM_DISTANCE_WANTED_M]
        + speed * params[i, P_IDM_TIME_WANTED_S]
        + speed * dv / (2 * math.sqrt(-comfort_max * comfort_min))
    )
    ratio = d_star / not_zero(d)
    with_front = free - comfort_max * (ratio * ratio)
    acc = with_front if _front_on(geo, lane, s_ego, lat_ego, s_self) else free
    if lane != target_lane:
        s_t, _ = local_coordinates(geo, target_lane, ox, oy, fused)
        s_et, lat_et = local_coordinates(geo, target_lane, ex, ey, fused)
        acc = min(acc, with_front if _front_on(geo, target_lane, s_et, lat_et, s_t) else free)
    return clip(acc, -acc_max, acc_max)


# ----------------------------------------------------------------------------------------------------------
# One scene.
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def _frame(
    i: int,
    first: bool,
    discrete: bool,
    action: int,
    commanded_acc: float,
    vf: np.ndarray,
    vi: np.ndarray,
    si: np.ndarray,
    params: np.ndarray,
    routes: np.ndarray,
    route_len: np.ndarray,
    geo: np.ndarray,
    successors: np.ndarray,
    from_id: np.ndarray,
    to_id: np.ndarray,
    target_speeds: np.ndarray,
    dt: float,
    fused: bool,
) -> None:
    """One simulation frame of ``AbstractEnv._simulate`` for scene ``i``."""
    present = si[i, SI_PRESENT] != 0
    other_is_idm = params[i, P_OTHER_IS_IDM] != 0.0
    if first:
        # action_type.act(action): the ego's own act (its follow_road), then road.act() below.
        if discrete:
            if action != 1:
                k = speed_to_index(vf[i, EGO, V_SPEED], target_speeds) + (1 if action == 2 else -1)
                k = min(max(k, 0), target_speeds.size - 1)
                si[i, SI_SPEED_INDEX] = k
                vf[i, EGO, V_TARGET_SPEED] = target_speeds[k]
        else:
            vf[i, EGO, V_COMMANDED_ACC] = commanded_acc
        _follow_road(i, EGO, vf, vi, routes, route_len, geo, successors, from_id, to_id, fused)
    # road.act(), then Vehicle.clip_actions.
    steering_0 = acc_0 = steering_1 = acc_1 = 0.0
    for v in range(2):
        crashed = vi[i, v, VI_CRASHED] != 0
        if v == OTHER and not present:
            continue  # removed by _clear_vehicles: parked, outside every interaction
        if v == OTHER and other_is_idm and crashed:
            steering, acc = 0.0, -1.0 * vf[i, v, V_SPEED]  # IDMVehicle.act returns early
        else:
            _follow_road(i, v, vf, vi, routes, route_len, geo, successors, from_id, to_id, fused)
            steering = _steering(i, v, vf, vi, geo, fused)
            if v == EGO and not discrete:
                acc = vf[i, EGO, V_COMMANDED_ACC]
            elif v == OTHER and other_is_idm:
                acc = _idm_acceleration(i, vf, vi, params, geo, fused)
            else:
                acc = _KP_A * (vf[i, v, V_TARGET_SPEED] - vf[i, v, V_SPEED])
            if crashed:
                steering, acc = 0.0, -1.0 * vf[i, v, V_SPEED]
        speed = vf[i, v, V_SPEED]
        max_speed = params[i, P_EGO_MAX_SPEED_MPS] if v == EGO else VEHICLE_MAX_SPEED_MPS
        min_speed = params[i, P_EGO_MIN_SPEED_MPS] if v == EGO else VEHICLE_MIN_SPEED_MPS
        if speed > max_speed:
            acc = min(acc, 1.0 * (max_speed - speed))
        elif speed < min_speed:
            acc = max(acc, 1.0 * (min_speed - speed))
        if v == EGO:
            steering_0, acc_0 = steering, acc
        else:
            steering_1, acc_1 = steering, acc
    # road.step(dt): Vehicle.step (kinematic bicycle) and on_state_update, then collisions.
    for v in range(2):
        if v == OTHER and not present:
            continue
        steering = steering_0 if v == EGO else steering_1
        acc = acc_0 if v == EGO else acc_1
        speed, heading = vf[i, v, V_SPEED], vf[i, v, V_HEADING]
        beta = atan(1 / 2 * tan(steering))
        cos_hb, sin_hb = cos_sin(vf, i, v, heading + beta)
        x = vf[i, v, V_X] + speed * cos_hb * dt
        y = vf[i, v, V_Y] + speed * sin_hb * dt
        if vi[i, v, VI_HAS_IMPACT] != 0:
            x = x + vf[i, v, V_IMPACT_X]
            y = y + vf[i, v, V_IMPACT_Y]
            vi[i, v, VI_CRASHED] = 1
            vi[i, v, VI_HAS_IMPACT] = 0
        heading = heading + speed * sin(beta) / (VEHICLE_LENGTH_M / 2) * dt
        vf[i, v, V_X] = x
        vf[i, v, V_Y] = y
        vf[i, v, V_HEADING] = heading
        vf[i, v, V_SPEED] = speed + acc * dt
        vi[i, v, VI_LANE] = closest_lane(geo, x, y, heading, vi[i, v, VI_LANE], fused)
    if present:
        # Road.step: road.vehicles is [ego, other], so ego.handle_collisions(other, dt).
        intersecting, will, tx, ty = is_colliding(
            vf[i, EGO, V_X],
            vf[i, EGO, V_Y],
            vf[i, EGO, V_HEADING],
            vf[i, EGO, V_SPEED],
            vf[i, OTHER, V_X],
            vf[i, OTHER, V_Y],
            vf[i, OTHER, V_HEADING],
            vf[i, OTHER, V_SPEED],
            dt,
            fused,
        )
        if will:
            vf[i, EGO, V_IMPACT_X] = tx / 2
            vf[i, EGO, V_IMPACT_Y] = ty / 2
            vf[i, OTHER, V_IMPACT_X] = -tx / 2
            vf[i, OTHER, V_IMPACT_Y] = -ty / 2
            vi[i, EGO, VI_HAS_IMPACT] = 1
            vi[i, OTHER, VI_HAS_IMPACT] = 1
        if intersecting:
            vi[i, EGO, VI_CRASHED] = 1
            vi[i, OTHER, VI_CRASHED] = 1


@njit(cache=True, _nrt=False)
def _normalise(value: float, half_range: float) -> float:
    """``utils.lmap(value, [-half_range, half_range], [-1, 1])`` clipped to [-1, 1]."""
    lo = -half_range
    return clip(-1 + (value - lo) * (1 - (-1)) / (half_range - lo), -1.0, 1.0)


@njit(cache=True, _nrt=False)
def _observe(
    i: int,
    vf: np.ndarray,
    vi: np.ndarray,
    si: np.ndarray,
    params: np.ndarray,
    geo: np.ndarray,
    features: np.ndarray,
    absolute: bool,
    fused: bool,
    obs: np.ndarray,
    out_f: np.ndarray,
    out_b: np.ndarray,
) -> None:
    """Observation ``obs[i]``; reward, reward terms, ego speed, crashed and arrived into column ``i`` of
    ``out_f`` / ``out_b``."""
    ex, ey, eh, ev = vf[i, EGO, V_X], vf[i, EGO, V_Y], vf[i, EGO, V_HEADING], vf[i, EGO, V_SPEED]
    ox, oy, oh, ov = vf[i, OTHER, V_X], vf[i, OTHER, V_Y], vf[i, OTHER, V_HEADING], vf[i, OTHER, V_SPEED]
    ce, se = cos_sin(vf, i, EGO, eh)
    co, so = cos_sin(vf, i, OTHER, oh)
    seen = si[i, SI_PRESENT] != 0 and norm2(ox - ex, oy - ey, fused) < _PERCEPTION_DISTANCE
    n_feat = features.size
    for v in range(2):
        for j in range(n_feat):
            f = features[j]
            if v == OTHER and not seen:
                obs[i, n_feat + j] = 0.0
                continue
            if f == F_PRESENCE:
                val = 1.0
            elif f == F_CONFLICT_DISTANCE or f == F_CONFLICT_TIME:
                val = 0.0  # filled by the VectorEnv (see FEATURES)
            elif f == F_COS_H:
                val = ce if v == EGO else co
            elif f == F_SIN_H:
                val = se if v == EGO else so
            else:
                if f == F_X:
                    val, origin, half = (ex if v == EGO else ox), ex, _POSITION_RANGE
                elif f == F_Y:
                    val, origin, half = (ey if v == EGO else oy), ey, _POSITION_RANGE
                elif f == F_VX:
                    val, origin, half = (ev * ce if v == EGO else ov * co), ev * ce, _VELOCITY_RANGE
                else:
                    val, origin, half = (ev * se if v == EGO else ov * so), ev * se, _VELOCITY_RANGE
                if v == OTHER and not absolute:
                    val = val - origin
                val = _normalise(val, half)
            obs[i, v * n_feat + j] = val
    # IntersectionEnv._rewards / _reward.
    lane = vi[i, EGO, VI_LANE]
    s, r = local_coordinates(geo, lane, ex, ey, fused)
    arrived = geo[lane, L_IS_EXIT] != 0.0 and s >= _EXIT_DISTANCE_M
    on_road = (
        abs(r) <= geo[lane, L_WIDTH] / 2
        and -_LANE_VEHICLE_LENGTH <= s
        and s < geo[lane, L_LENGTH] + _LANE_VEHICLE_LENGTH
    )
    lo, hi = params[i, P_SPEED_LO_MPS], params[i, P_SPEED_HI_MPS]
    collision = 1.0 if vi[i, EGO, VI_CRASHED] != 0 else 0.0
    high_speed = clip(0 + (ev - lo) * (1 - 0) / (hi - lo), 0.0, 1.0)
    out_f[O_COLLISION, i] = collision
    out_f[O_HIGH_SPEED, i] = high_speed
    out_f[O_ARRIVED, i] = 1.0 if arrived else 0.0
    out_f[O_ON_ROAD, i] = 1.0 if on_road else 0.0
    out_f[O_SPEED, i] = ev
    out_b[B_CRASHED, i] = collision != 0.0
    out_b[B_ARRIVED, i] = arrived
    out_b[B_OTHER_SEEN, i] = seen
    w_collision, w_arrived = params[i, P_W_COLLISION], params[i, P_W_ARRIVED]
    reward = 0 + w_collision * collision + params[i, P_W_HIGH_SPEED] * high_speed
    reward = reward + w_arrived * out_f[O_ARRIVED, i]
    if arrived:
        reward = w_arrived
    reward = reward * out_f[O_ON_ROAD, i]
    if params[i, P_NORMALIZE_REWARD] != 0.0:
        reward = 0 + (reward - w_collision) * (1 - 0) / (w_arrived - w_collision)
    out_f[O_REWARD, i] = reward


@njit(cache=True, _nrt=False)
def reset_scene(
    i: int,
    vf: np.ndarray,
    vi: np.ndarray,
    sf: np.ndarray,
    si: np.ndarray,
    init_vf: np.ndarray,
    init_vi: np.ndarray,
    init_si: np.ndarray,
) -> None:
    """Scene ``i`` back to its initial state."""
    for v in range(2):
        for k in range(NVF):
            vf[i, v, k] = init_vf[i, v, k]
        for k in range(NVI):
            vi[i, v, k] = init_vi[i, v, k]
    for k in range(NSF):
        sf[i, k] = 0.0
    for k in range(NSI):
        si[i, k] = init_si[i, k]


@njit(cache=True, _nrt=False)
def _step_scene(
    i: int,
    actions: np.ndarray,
    commanded_acc: np.ndarray,
    vf: np.ndarray,
    vi: np.ndarray,
    sf: np.ndarray,
    si: np.ndarray,
    init_vf: np.ndarray,
    init_vi: np.ndarray,
    init_si: np.ndarray,
    params: np.ndarray,
    routes: np.ndarray,
    route_len: np.ndarray,
    geo: np.ndarray,
    successors: np.ndarray,
    from_id: np.ndarray,
    to_id: np.ndarray,
    target_speeds: np.ndarray,
    features: np.ndarray,
    absolute: bool,
    discrete: bool,
    frames: int,
    dt: float,
    policy_dt: float,
    fused: bool,
    obs: np.ndarray,
    out_f: np.ndarray,
    out_b: np.ndarray,
    frames_out: np.ndarray,
) -> None:
    """One ``step`` of scene ``i`` (or its ``NEXT_STEP`` autoreset), writing row ``i`` of the outputs;
    ``frames_out[i, f, vehicle]`` gets (x, y, speed, crashed) after frame ``f`` (not written on a reset)."""
    if si[i, SI_NEEDS_RESET] != 0:
        reset_scene(i, vf, vi, sf, si, init_vf, init_vi, init_si)
        _observe(i, vf, vi, si, params, geo, features, absolute, fused, obs, out_f, out_b)
        out_f[O_REWARD, i] = 0.0
        out_b[B_TERMINATED, i] = False
        out_b[B_TRUNCATED, i] = False
        return
    for f in range(frames):
        _frame(
            i, f == 0, discrete, actions[i], commanded_acc[i], vf, vi, si, params, routes, route_len, geo,
            successors, from_id, to_id, target_speeds, dt, fused,
        )  # fmt: skip
        for v in range(2):  # the frame's states, for the criticality metrics (intersection_meta.criticality)
            frames_out[i, f, v, 0] = vf[i, v, V_X]
            frames_out[i, f, v, 1] = vf[i, v, V_Y]
            frames_out[i, f, v, 2] = vf[i, v, V_SPEED]
            frames_out[i, f, v, 3] = float(vi[i, v, VI_CRASHED])
    sf[i, S_TIME] += policy_dt
    _observe(i, vf, vi, si, params, geo, features, absolute, fused, obs, out_f, out_b)
    terminated = out_b[B_CRASHED, i] or out_b[B_ARRIVED, i]
    truncated = sf[i, S_TIME] >= params[i, P_DURATION_S]
    out_b[B_TERMINATED, i] = terminated
    out_b[B_TRUNCATED, i] = truncated
    si[i, SI_NEEDS_RESET] = 1 if (terminated or truncated) else 0
    # _clear_vehicles: the other vehicle leaves the scene 20 m before the end of its exit lane.
    if si[i, SI_PRESENT] != 0:
        lane = vi[i, OTHER, VI_LANE]
        s, _ = local_coordinates(geo, lane, vf[i, OTHER, V_X], vf[i, OTHER, V_Y], fused)
        if geo[lane, L_IS_EXIT] != 0.0 and s >= geo[lane, L_LENGTH] - 4 * VEHICLE_LENGTH_M:
            si[i, SI_PRESENT] = 0
            vf[i, OTHER, V_SPEED] = 0.0


@njit(cache=True)
def first_invalid_action(actions: np.ndarray, discrete: bool) -> int:
    """The first scene whose discrete action is not in {0, 1, 2}, or -1."""
    if discrete:
        for i in range(actions.size):
            if actions[i] < 0 or actions[i] > 2:
                return i
    return -1


@njit(cache=True, _nrt=False)
def hold_scene(i: int, obs: np.ndarray, out_f: np.ndarray, out_b: np.ndarray) -> None:
    """Scene ``i`` left as it is (not stepped, not reset): zero observation, outputs and flags."""
    for k in range(obs.shape[1]):
        obs[i, k] = 0.0
    for k in range(out_f.shape[0]):
        out_f[k, i] = 0.0
    for k in range(out_b.shape[0]):
        out_b[k, i] = False


@njit(cache=True)
def step_serial(
    actions, active, commanded_acc, vf, vi, sf, si, init_vf, init_vi, init_si, params, routes, route_len, geo,
    successors, from_id, to_id, target_speeds, features, absolute, discrete, frames, dt, policy_dt, fused,
    obs, out_f, out_b, frames_out,
):  # fmt: skip
    """:func:`_step_scene` for every scene of the bool mask ``active`` (the others are held, see
    :func:`hold_scene`), in one thread. Returns -1, or the first scene whose discrete action is not in
    {0, 1, 2} (then nothing was stepped)."""
    bad = first_invalid_action(actions, discrete)
    if bad >= 0:
        return bad
    for i in range(vf.shape[0]):
        if not active[i]:
            hold_scene(i, obs, out_f, out_b)
            continue
        _step_scene(
            i, actions, commanded_acc, vf, vi, sf, si, init_vf, init_vi, init_si, params, routes, route_len,
            geo, successors, from_id, to_id, target_speeds, features, absolute, discrete, frames, dt,
            policy_dt, fused, obs, out_f, out_b, frames_out,
        )  # fmt: skip
    return -1


@njit(cache=True, parallel=True)
def step_parallel(
    actions, active, commanded_acc, vf, vi, sf, si, init_vf, init_vi, init_si, params, routes, route_len, geo,
    successors, from_id, to_id, target_speeds, features, absolute, discrete, frames, dt, policy_dt, fused,
    obs, out_f, out_b, frames_out,
):  # fmt: skip
    """:func:`step_serial` with the scenes spread over numba's threads."""
    bad = first_invalid_action(actions, discrete)
    if bad >= 0:
        return bad
    for i in prange(vf.shape[0]):
        if not active[i]:
            hold_scene(i, obs, out_f, out_b)
            continue
        _step_scene(
            i, actions, commanded_acc, vf, vi, sf, si, init_vf, init_vi, init_si, params, routes, route_len,
            geo, successors, from_id, to_id, target_speeds, features, absolute, discrete, frames, dt,
            policy_dt, fused, obs, out_f, out_b, frames_out,
        )  # fmt: skip
    return -1


@njit(cache=True)
def reset_and_observe(
    mask, vf, vi, sf, si, init_vf, init_vi, init_si, params, geo, features, absolute, fused, obs, out_f, out_b,
):  # fmt: skip
    """Reset the scenes of ``mask``, then observe every scene (observation, reward terms, infos)."""
    for i in range(vf.shape[0]):
        if mask[i]:
            reset_scene(i, vf, vi, sf, si, init_vf, init_vi, init_si)
        _observe(i, vf, vi, si, params, geo, features, absolute, fused, obs, out_f, out_b)
