"""Scenario preview: what sampled intersection tasks look like before any training time is spent on them.

For each task this computes, from highway-env's own road network, both vehicles' start poses and routes (approach
lane from the start, the junction lane, and the exit lane up to the arrival distance), the *conflict zone* where the
routes first come within one car width of each other, and each vehicle's arrival time there at its constant initial
speed (the same assumption that defines ``time_gap_s`` at the stop lines). The grid itself is drawn by the viewer's
drawing code (``viz/draw.py``: :func:`render_preview_grid`), so a preview looks exactly like a replay's first frame.

``python -m intersection_meta.scenarios preview NAME -n 16 --out grid.png``.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from intersection_meta.resources import PACKAGE_DIR
from intersection_meta.tasks import APPROACH_LANE_LENGTH_M, IntersectionTask

#: Two route points closer than this are in each other's way: one car width [m] (highway-env's Vehicle.WIDTH).
CONFLICT_DISTANCE_M = 2.0
#: A gap at the conflict zone under this is flagged in the panel [s].
CLOSE_CALL_S = 1.0
#: Spacing of route points [m].
ROUTE_STEP_M = 0.5


def viewer_draw() -> ModuleType:
    """The viewer's drawing module of *this* copy of the package.

    In a checkout it is the top-level ``viz/draw.py`` beside the package (also when an editable install of another
    checkout maps ``intersection_meta.viz`` elsewhere); in a wheel install, ``intersection_meta.viz.draw``.
    """
    checkout = PACKAGE_DIR.parent / "viz" / "draw.py"
    if checkout.is_file():
        try:
            module = importlib.import_module("viz.draw")
            if Path(module.__file__).resolve() == checkout.resolve():
                return module
        except ModuleNotFoundError:
            pass
    return importlib.import_module("intersection_meta.viz.draw")


@functools.lru_cache(maxsize=1)
def _network() -> Any:
    return viewer_draw().intersection_road().network


@dataclass(frozen=True)
class Route:
    """A vehicle's route from its start: world points ``[N, 2]`` [m], their arc length [m] and its start heading."""

    points_m: np.ndarray
    arc_m: np.ndarray
    heading_rad: float


def route(entry: str, intent: str, distance_to_stop_m: float, *, network: Any = None) -> Route:
    """The route of a vehicle that starts ``distance_to_stop_m`` before the stop line of ``entry`` and leaves by
    ``intent``: its approach lane, the junction lane and the exit lane up to the arrival distance, as planned by
    highway-env (``RoadNetwork.shortest_path``, like ``plan_route_to``)."""
    from intersection_meta.envs.intersection import (
        ARRIVAL_DISTANCE_M,
        approach_lane_index,
        destination_node,
    )

    network = network if network is not None else _network()
    start_lane = approach_lane_index(entry)
    nodes = [start_lane[0], *network.shortest_path(start_lane[1], destination_node(entry, intent))]
    points = []
    for i, (a, b) in enumerate(itertools.pairwise(nodes)):
        lane = network.get_lane((a, b, 0))
        s0 = APPROACH_LANE_LENGTH_M - distance_to_stop_m if i == 0 else 0.0
        s1 = ARRIVAL_DISTANCE_M if i == len(nodes) - 2 else lane.length
        s = np.append(np.arange(s0, s1, ROUTE_STEP_M), s1)
        points.append(np.array([lane.position(x, 0.0) for x in (s if i == 0 else s[1:])]))
    pts = np.concatenate(points)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    heading = float(network.get_lane(start_lane).heading_at(APPROACH_LANE_LENGTH_M - distance_to_stop_m))
    return Route(pts, arc, heading)


def conflict_indices(a: np.ndarray, b: np.ndarray, distance_m: float = CONFLICT_DISTANCE_M) -> tuple[int, int] | None:
    """First point of route ``a`` and first point of route ``b`` that lie within ``distance_m`` of the other route
    (the entries into the conflict zone), or None if the routes never come that close."""
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])  # [Na, Nb]
    close = d < distance_m
    if not close.any():
        return None
    return int(np.argmax(close.any(axis=1))), int(np.argmax(close.any(axis=0)))


@dataclass(frozen=True)
class TaskGeometry:
    """Start poses, routes and conflict-zone arrival times of one intersection task."""

    ego: Route
    other: Route
    #: Where the ego enters the conflict zone [m], or None if the routes never come within a car width.
    conflict_m: tuple[float, float] | None
    #: Arrival times at the conflict zone at constant initial speed [s] (None without a conflict zone).
    ego_arrival_s: float | None
    other_arrival_s: float | None


def task_geometry(task: IntersectionTask, *, network: Any = None) -> TaskGeometry:
    """Routes and conflict-zone arrival times of ``task`` (constant initial speeds)."""
    ego = route(task.ego_entry, task.ego_intent, task.ego_distance_to_stop_m, network=network)
    other = route(task.other_entry, task.other_intent, task.other_distance_to_stop_m, network=network)
    hit = conflict_indices(ego.points_m, other.points_m)
    if hit is None:
        return TaskGeometry(ego, other, None, None, None)
    i, j = hit
    return TaskGeometry(ego, other, (float(ego.points_m[i, 0]), float(ego.points_m[i, 1])),
                        float(ego.arc_m[i] / task.ego_speed_mps), float(other.arc_m[j] / task.other_speed_mps))


def scene_preview(task: IntersectionTask, *, network: Any = None) -> Any:
    """The viewer's ``ScenePreview`` of ``task``: vehicles, routes, conflict zone and the panel's text."""
    draw = viewer_draw()
    g = task_geometry(task, network=network)
    vehicles = tuple((float(r.points_m[0, 0]), float(r.points_m[0, 1]), r.heading_rad, v)
                     for r, v in ((g.ego, task.ego_speed_mps), (g.other, task.other_speed_mps)))
    lines = [
        (f"{task.task_id}   ego {task.ego_intent}, other {task.other_intent} ({task.other_driver})", False),
        (f"gap at stop lines {task.time_gap_s:+.2f} s; other starts {task.other_distance_to_stop_m:.0f} m out", False),
    ]
    if g.ego_arrival_s is None or g.other_arrival_s is None:
        lines.append(("routes never within a car width: no conflict", False))
    else:
        delta = g.other_arrival_s - g.ego_arrival_s
        lines.append((f"conflict zone: ego {g.ego_arrival_s:.1f} s, other {g.other_arrival_s:.1f} s "
                      f"({delta:+.1f} s)", abs(delta) < CLOSE_CALL_S))
    return draw.ScenePreview(vehicles, task.other_driver, (g.ego.points_m, g.other.points_m), g.conflict_m,
                             tuple(lines))


def render_preview(tasks: Sequence[IntersectionTask], *, columns: int = 4, vehicles: bool = True) -> np.ndarray:
    """A grid of preview panels of ``tasks`` as an ``[H, W, 3]`` uint8 image (no display needed)."""
    previews = [scene_preview(t) for t in tasks]
    return viewer_draw().render_preview_grid(previews, columns=columns, vehicles=vehicles)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``[H, W, 3]`` uint8 image as PNG (folders created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
