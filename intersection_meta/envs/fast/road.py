"""highway-env's intersection road as arrays: the lane table, routes and each task's initial scene.

Everything here runs once per env construction, in Python; the per-step simulation is in
:mod:`intersection_meta.envs.fast.kernel`, which reads the arrays built here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from intersection_meta.tasks import ENTRIES

__all__ = ["LaneTable", "destination_node", "entry_index", "lane_table", "route"]

# Columns of ``LaneTable.geometry`` (float64, one row per lane).
L_CIRCULAR = 0  # 1.0 for a CircularLane, 0.0 for a StraightLane
L_START_X, L_START_Y = 1, 2  # straight lanes
L_DIR_X, L_DIR_Y = 3, 4
L_LAT_X, L_LAT_Y = 5, 6
L_HEADING = 7
L_LENGTH = 8
L_CENTER_X, L_CENTER_Y = 9, 10  # circular lanes
L_RADIUS = 11
L_START_PHASE = 12
L_TURN = 13  # CircularLane.direction (+1 clockwise, -1 otherwise)
L_WIDTH = 14
L_SPEED_LIMIT = 15
L_IS_EXIT = 16  # "il" in from and "o" in to
L_BBOX_XMIN, L_BBOX_XMAX, L_BBOX_YMIN, L_BBOX_YMAX = 17, 18, 19, 20  # centre curve, padded 1e-3 m
N_LANE_COLUMNS = 21


@dataclass(frozen=True)
class LaneTable:
    """highway-env's intersection lanes in ``RoadNetwork.graph`` iteration order.

    Attributes:
        names: ``(from, to, id)`` of each lane.
        geometry: ``(L, N_LANE_COLUMNS)`` float64, columns ``L_*`` of this module.
        successors: ``(L, 3)`` lanes starting at this lane's end node, graph order, -1 padded.
        from_id, to_id: node ids (index in the sorted node names) of each lane's ends.
    """

    names: tuple[tuple[str, str, int], ...]
    geometry: np.ndarray
    successors: np.ndarray
    from_id: np.ndarray
    to_id: np.ndarray

    def index(self, name: tuple[str, str, int]) -> int:
        """Row of the lane ``(from, to, id)``."""
        return self.names.index(name)


@functools.lru_cache(maxsize=1)
def reference_network() -> Any:
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

    net = reference_network()
    names, lanes = [], []
    for _from, to_dict in net.graph.items():
        for _to, lane_list in to_dict.items():
            for _id, lane in enumerate(lane_list):
                names.append((_from, _to, _id))
                lanes.append(lane)
    geometry = np.zeros((len(lanes), N_LANE_COLUMNS))
    geometry[:, L_RADIUS] = 1.0
    geometry[:, L_TURN] = 1.0
    for i, lane in enumerate(lanes):
        row = geometry[i]
        if isinstance(lane, CircularLane):
            row[L_CIRCULAR] = 1.0
            row[[L_CENTER_X, L_CENTER_Y]] = lane.center
            row[L_RADIUS] = lane.radius
            row[L_START_PHASE] = lane.start_phase
            row[L_TURN] = lane.direction
        elif isinstance(lane, StraightLane):
            row[[L_START_X, L_START_Y]] = lane.start
            row[[L_DIR_X, L_DIR_Y]] = lane.direction
            row[[L_LAT_X, L_LAT_Y]] = lane.direction_lateral
            row[L_HEADING] = lane.heading
        else:  # pragma: no cover - the intersection only has these two lane types
            raise TypeError(f"unsupported lane type {type(lane).__name__}")
        row[L_LENGTH] = lane.length
        row[L_WIDTH] = lane.width
        row[L_SPEED_LIMIT] = lane.speed_limit
        row[L_IS_EXIT] = float("il" in names[i][0] and "o" in names[i][1])
        pts = np.array([lane.position(s, 0.0) for s in np.linspace(0.0, lane.length, 2001)])
        pad = 1e-3
        row[[L_BBOX_XMIN, L_BBOX_XMAX, L_BBOX_YMIN, L_BBOX_YMAX]] = (
            pts[:, 0].min() - pad,
            pts[:, 0].max() + pad,
            pts[:, 1].min() - pad,
            pts[:, 1].max() + pad,
        )
    nodes = sorted({f for f, _, _ in names} | {t for _, t, _ in names})
    successors = -np.ones((len(lanes), 3), dtype=np.int64)
    for i, (_from, _to, _id) in enumerate(names):
        nxt = [names.index((_to, t, 0)) for t in net.graph.get(_to, {})]
        successors[i, : len(nxt)] = nxt
    return LaneTable(
        names=tuple(names),
        geometry=geometry,
        successors=successors,
        from_id=np.array([nodes.index(f) for f, _, _ in names], dtype=np.int64),
        to_id=np.array([nodes.index(t) for _, t, _ in names], dtype=np.int64),
    )


@functools.cache
def route(lane: int, destination: str) -> tuple[int, ...]:
    """``ControlledVehicle.plan_route_to``: the current lane, then the BFS shortest path's roads."""
    tab = lane_table()
    try:
        path = reference_network().shortest_path(tab.names[lane][1], destination)
    except KeyError:
        path = []
    return (lane, *tuple(tab.index((path[i], path[i + 1], 0)) for i in range(len(path) - 1)))


_INTENT_OFFSET = {"right": -1, "straight": 2, "left": 1}


def destination_node(entry: int, intent: str) -> str:
    """Exit node of a vehicle entering from arm ``entry`` with ``intent``."""
    if intent not in _INTENT_OFFSET:
        raise ValueError(f"unknown intent {intent!r}; allowed: {sorted(_INTENT_OFFSET)}")
    return f"o{(entry + _INTENT_OFFSET[intent]) % 4}"


def entry_index(entry: str) -> int:
    """Arm index (0 south, 1 west, 2 north, 3 east) of an entry name."""
    if entry not in ENTRIES:
        raise ValueError(f"unknown entry {entry!r}; allowed: {list(ENTRIES)}")
    return ENTRIES.index(entry)
