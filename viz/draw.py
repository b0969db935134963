"""Pure drawing of recorded episodes onto pygame surfaces (no window, no event loop, no torch).

Intersection recordings are drawn the way highway-env draws its intersection: the road is highway-env's own
intersection road network (``IntersectionEnv._make_road``) painted by ``RoadGraphics``/``WorldSurface``, and the
two vehicles are ``Vehicle`` objects placed at the recorded states and painted by ``VehicleGraphics``.
CartPole / LunarLander recordings show their stored rgb frames. Below each world view a HUD shows the task,
time, step, speeds, the running criticality metrics (intersections: minimum distance, PET, minimum TTC along the
paths, the ego's peak deceleration so far), the action being executed, the reward so far and the outcome.

Coordinates: a :class:`Camera` maps world metres to panel pixels exactly like highway-env's ``WorldSurface``
(``pixel = int((world - origin) * scaling)`` with ``origin = center - size / 2 / scaling``).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pygame

from intersection_meta.recording import Recording

#: Side of the square world view of one panel [px], and the height of the HUD band below it [px].
WORLD_PX = 560
HUD_PX = 120

#: Labels drawn next to vehicle 0 and vehicle 1, and their distance from the vehicle's centre [px].
VEHICLE_LABELS = ("ego", "other")
LABEL_GAP_PX = 10

BACKGROUND = (30, 30, 30)
HUD_BG = (20, 20, 24)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 170)
EGO_COLOR = (50, 200, 0)  # highway-env's ego green
OTHER_COLORS = {"idm": (100, 200, 255), "constant_speed": (200, 200, 0)}  # its IDM blue / plain yellow
CRASH_COLOR = (255, 100, 100)
OUTCOME_COLORS = {"arrived": (90, 220, 90), "collided": (255, 90, 90), "timed out": (255, 190, 60),
                  "terminated": (200, 200, 200)}


@dataclass(frozen=True)
class Camera:
    """What part of the world a panel shows: its centre [m] and zoom [px per m]."""

    center_m: tuple[float, float] = (0.0, 0.0)
    scaling_px_per_m: float = 5.5 * 1.3  # highway-env's intersection default


def world_to_pixel(camera: Camera, size_px: tuple[int, int], x_m: float, y_m: float) -> tuple[int, int]:
    """Pixel of a world point in a world view of ``size_px``, with highway-env's ``WorldSurface`` arithmetic."""
    origin_x = camera.center_m[0] - 0.5 * size_px[0] / camera.scaling_px_per_m
    origin_y = camera.center_m[1] - 0.5 * size_px[1] / camera.scaling_px_per_m
    return int((x_m - origin_x) * camera.scaling_px_per_m), int((y_m - origin_y) * camera.scaling_px_per_m)


def fit_camera(
    recordings: Sequence[Recording],
    size_px: tuple[int, int] = (WORLD_PX, WORLD_PX),
    *,
    margin_m: float = 8.0,
    min_scaling: float = 2.5,
    max_scaling: float = 12.0,
) -> Camera:
    """A fixed camera that keeps the intersection and every recorded vehicle position in view."""
    xs, ys = [-15.0, 15.0], [-15.0, 15.0]  # always show the junction itself
    for rec in recordings:
        if rec.kind != "intersection" or rec.n_frames == 0:
            continue
        present = rec.frame_states[..., 4] > 0.5
        xs += [float(rec.frame_states[..., 0][present].min()), float(rec.frame_states[..., 0][present].max())]
        ys += [float(rec.frame_states[..., 1][present].min()), float(rec.frame_states[..., 1][present].max())]
    x0, x1, y0, y1 = min(xs) - margin_m, max(xs) + margin_m, min(ys) - margin_m, max(ys) + margin_m
    scaling = min(size_px[0] / (x1 - x0), size_px[1] / (y1 - y0))
    return Camera(((x0 + x1) / 2, (y0 + y1) / 2), float(np.clip(scaling, min_scaling, max_scaling)))


@functools.lru_cache(maxsize=1)
def intersection_road() -> object:
    """highway-env's intersection road (built once, without vehicles and without touching any class state)."""
    from highway_env.envs.intersection_env import IntersectionEnv

    holder = SimpleNamespace(
        config={"show_trajectories": False, "neighbour_vehicles_connected_lanes": False},
        np_random=np.random.default_rng(0),
    )
    IntersectionEnv._make_road(holder)  # only reads config / np_random and sets holder.road
    return holder.road


def _world_surface(size_px: tuple[int, int], camera: Camera) -> object:
    from highway_env.road.graphics import WorldSurface

    surface = WorldSurface(size_px, 0, pygame.Surface(size_px))
    surface.scaling = camera.scaling_px_per_m
    surface.centering_position = [0.5, 0.5]
    surface.move_display_window_to(np.asarray(camera.center_m, dtype=float))
    return surface


@functools.lru_cache(maxsize=8)
def _road_background(size_px: tuple[int, int], camera: Camera) -> pygame.Surface:
    from highway_env.road.graphics import RoadGraphics

    surface = _world_surface(size_px, camera)
    RoadGraphics.display(intersection_road(), surface)
    return surface.copy()


def _font(size: int, bold: bool = False) -> pygame.font.Font:
    """pygame's default font; re-created after anything (e.g. gymnasium's ``env.close()``) quit pygame."""
    if not pygame.font.get_init():
        pygame.font.init()
        _cached_font.cache_clear()
    return _cached_font(size, bold)


@functools.lru_cache(maxsize=8)
def _cached_font(size: int, bold: bool) -> pygame.font.Font:
    font = pygame.font.Font(None, size)
    font.set_bold(bold)
    return font


def _vehicle_colors(rec: Recording) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    driver = rec.task.get("other_driver", "idm")
    return EGO_COLOR, OTHER_COLORS.get(driver, OTHER_COLORS["idm"])


def draw_world(surface: pygame.Surface, rec: Recording, frame: int, camera: Camera, *,
               vehicles: bool = True, trail: bool = True) -> None:
    """Draw the world view of an intersection recording at ``frame`` filling ``surface``."""
    from highway_env.vehicle.graphics import VehicleGraphics
    from highway_env.vehicle.kinematics import Vehicle

    size = surface.get_size()
    world = _world_surface(size, camera)
    world.blit(_road_background(size, camera), (0, 0))
    frame = int(np.clip(frame, 0, rec.n_frames - 1))
    if trail and frame > 0:
        for vehicle_index, color in enumerate(_vehicle_colors(rec)):
            states = rec.frame_states[: frame + 1, vehicle_index]
            points = [world.pos2pix(x, y) for x, y in states[states[:, 4] > 0.5][:, :2]]
            if len(points) > 1:
                pygame.draw.lines(world, tuple(c // 2 + 60 for c in color), False, points, 2)
    if vehicles:
        tags, anchors = [], []
        for vehicle_index, color in enumerate(_vehicle_colors(rec)):
            x_m, y_m, heading, speed, present, crashed = rec.frame_states[frame, vehicle_index]
            if present < 0.5:
                continue
            vehicle = Vehicle(None, np.array([x_m, y_m]), float(heading), float(speed))
            vehicle.color = CRASH_COLOR if crashed > 0.5 else color
            VehicleGraphics.display(vehicle, world, offscreen=True)
            tags.append(_font(16).render(VEHICLE_LABELS[vehicle_index], True, TEXT))
            anchors.append(world.pos2pix(x_m, y_m))
        rects = place_labels(anchors, [tag.get_size() for tag in tags], size)
        for tag, (x, y, _, _) in zip(tags, rects, strict=True):
            world.blit(tag, (x, y))
    surface.blit(world, (0, 0))


Rect = tuple[int, int, int, int]  # x, y, width, height [px]


def rects_overlap(a: Rect, b: Rect) -> bool:
    """Whether two rectangles share interior pixels (touching edges do not count)."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _label_candidates(anchor: tuple[int, int], size: tuple[int, int]) -> Iterator[Rect]:
    """Places for a label next to its vehicle, nearest first: the four diagonal corners at growing distances."""
    (px, py), (w, h) = anchor, size
    for gap in (LABEL_GAP_PX, 2 * LABEL_GAP_PX, 3 * LABEL_GAP_PX):
        yield px + gap, py - gap - h, w, h  # above right
        yield px + gap, py + gap, w, h  # below right
        yield px - gap - w, py - gap - h, w, h  # above left
        yield px - gap - w, py + gap, w, h  # below left


def place_labels(anchors: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]],
                 bounds: tuple[int, int]) -> list[Rect]:
    """Rectangles for vehicle labels, in order, that never overlap each other.

    Each label takes the first of its candidate places (:func:`_label_candidates`) that stays inside ``bounds``
    (width, height; any candidate if none does) and clears every label placed before it. If none clears them
    (vehicles on top of each other at an edge), it goes right below the lowest label placed so far, which clears
    them all by construction.
    """
    placed: list[Rect] = []
    for anchor, size in zip(anchors, sizes, strict=True):
        candidates = list(_label_candidates(anchor, size))
        pool = [r for r in candidates
                if r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= bounds[0] and r[1] + r[3] <= bounds[1]] or candidates
        free = [r for r in pool if not any(rects_overlap(r, p) for p in placed)]
        if free:
            placed.append(free[0])
        else:  # only possible when something is placed already
            x, _, w, h = pool[0]
            placed.append((x, max(p[1] + p[3] for p in placed), w, h))
    return placed


def draw_rgb(surface: pygame.Surface, rec: Recording, frame: int) -> None:
    """Draw a stored rgb frame, scaled to fit ``surface`` and centred (CartPole / LunarLander)."""
    surface.fill(BACKGROUND)
    image = rec.rgb_frames[int(np.clip(frame, 0, len(rec.rgb_frames) - 1))]
    img = pygame.surfarray.make_surface(np.ascontiguousarray(image.swapaxes(0, 1)))
    scale = min(surface.get_width() / img.get_width(), surface.get_height() / img.get_height())
    img = pygame.transform.smoothscale(img, (int(img.get_width() * scale), int(img.get_height() * scale)))
    surface.blit(img, img.get_rect(center=surface.get_rect().center))


def episode_number(episode: int) -> int:
    """The 1-based episode number shown to users (tabs, HUD, ``--episode``) for a 0-based episode index."""
    return episode + 1


def completed_steps(rec: Recording, frame: int) -> int:
    """Decision steps whose reward is known at ``frame`` (a step completes at its last frame)."""
    frame = int(np.clip(frame, 0, rec.n_frames - 1))
    step = int(rec.frame_step[frame])
    if step == 0:
        return 0
    last_frame_of_step = int(np.flatnonzero(rec.frame_step == step)[-1])
    return step if frame >= last_frame_of_step else step - 1


def action_text(rec: Recording, step: int) -> str:
    """Text of the action executed during decision step ``step`` (1-based; 0 means none yet)."""
    if step <= 0 or step > len(rec.actions):
        return "-"
    action = rec.actions[step - 1]
    if np.ndim(action) == 0 and rec.action_names and 0 <= int(action) < len(rec.action_names):
        return f"{rec.action_names[int(action)]} ({int(action)})"
    return np.array2string(np.asarray(action, dtype=float), precision=2, separator=", ")


def hud_lines(rec: Recording, frame: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The HUD's text lines (text, colour) for ``frame``."""
    frame = int(np.clip(frame, 0, rec.n_frames - 1))
    step = int(rec.frame_step[frame])
    done = completed_steps(rec, frame)
    try:
        task_text = rec.task_value().describe()
    except (TypeError, ValueError):
        task_text = str(rec.task)
    lines = [(f"episode {episode_number(rec.episode)}: {rec.label}   [{rec.scenario}]   result: {rec.outcome}",
              OUTCOME_COLORS.get(rec.outcome, TEXT))]
    lines += [(t, DIM_TEXT) for t in _wrap(task_text, 92)]
    timing = f"t {rec.frame_time_s[frame]:5.2f} s   step {step}/{rec.n_steps}   frame {frame + 1}/{rec.n_frames}"
    if rec.kind == "intersection":
        ego, other = rec.frame_states[frame]
        timing += f"   ego {ego[3]:4.1f} m/s"
        timing += f"   other {other[3]:4.1f} m/s" if other[4] > 0.5 else "   other gone"
    lines.append((timing, TEXT))
    if rec.kind == "intersection":
        lines.append((criticality_text(criticality_at(rec, frame)), TEXT))
    lines.append((f"action {action_text(rec, step)}   reward so far {np.sum(rec.rewards[:done]):+.2f}"
                  f"   (episode {rec.total_reward:+.2f})", TEXT))
    return lines


_CRITICALITY_CACHE: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def criticality_at(rec: Recording, frame: int) -> np.ndarray:
    """The running criticality metrics of ``rec`` at ``frame`` (computed once per recording, then cached)."""
    cached = _CRITICALITY_CACHE.get(id(rec))
    if cached is None or cached[0]() is not rec:
        for key in [k for k, (ref, _) in _CRITICALITY_CACHE.items() if ref() is None]:
            del _CRITICALITY_CACHE[key]
        cached = (weakref.ref(rec), rec.criticality_series())
        _CRITICALITY_CACHE[id(rec)] = cached
    return cached[1][int(np.clip(frame, 0, rec.n_frames - 1))]


def criticality_text(values: Sequence[float]) -> str:
    """``min dist 4.1 m   PET 1.2 s   min TTC -   peak decel 3.0 m/s2`` ('-' for an infinite value)."""
    def cell(v: float, unit: str) -> str:
        return f"{v:.1f} {unit}" if np.isfinite(v) else "-"

    d, pet, ttc, decel = values
    return (f"min dist {cell(d, 'm')}   PET {cell(pet, 's')}   min TTC {cell(ttc, 's')}   "
            f"peak decel {cell(decel, 'm/s2')}")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def draw_hud(surface: pygame.Surface, rec: Recording, frame: int) -> None:
    """Fill ``surface`` with the HUD of ``rec`` at ``frame``."""
    surface.fill(HUD_BG)
    y = 6
    for i, (text, color) in enumerate(hud_lines(rec, frame)[:6]):
        image = _font(20 if i == 0 else 18, bold=i == 0).render(text, True, color)
        surface.blit(image, (8, y))
        y += image.get_height() + 3


def draw_frame(surface: pygame.Surface, rec: Recording, frame: int, camera: Camera | None = None, *,
               topleft: tuple[int, int] = (0, 0), world_px: int = WORLD_PX, hud_px: int = HUD_PX,
               vehicles: bool = True) -> None:
    """Draw one panel (world view ``world_px`` square, HUD ``hud_px`` high below it) of ``rec`` at ``frame``.

    Args:
        surface: Target surface (any pygame surface: a window or an offscreen ``pygame.Surface``).
        rec: The recording.
        frame: Frame index, clipped to the recording (a finished episode stays on its last frame).
        camera: World camera (intersection only); default :func:`fit_camera` on ``rec``.
        topleft: Where the panel goes on ``surface``.
        world_px: Side of the world view.
        hud_px: Height of the HUD band (0 for none).
        vehicles: Draw the vehicles (``False`` gives the bare road, useful as a reference).
    """
    world = pygame.Surface((world_px, world_px))
    if rec.kind == "intersection":
        draw_world(world, rec, frame, camera or fit_camera([rec], (world_px, world_px)), vehicles=vehicles,
                   trail=vehicles)
    else:
        draw_rgb(world, rec, frame)
    if frame >= rec.n_frames - 1:
        banner = _font(34, bold=True).render(rec.outcome.upper(), True, OUTCOME_COLORS.get(rec.outcome, TEXT))
        world.blit(banner, banner.get_rect(midtop=(world_px // 2, 10)))
    surface.blit(world, topleft)
    if hud_px > 0:
        hud = pygame.Surface((world_px, hud_px))
        draw_hud(hud, rec, frame)
        surface.blit(hud, (topleft[0], topleft[1] + world_px))


def layout_size(n_panels: int, *, world_px: int = WORLD_PX, hud_px: int = HUD_PX) -> tuple[int, int]:
    """Pixel size of ``n_panels`` panels side by side."""
    return max(1, n_panels) * world_px, world_px + hud_px


def draw_layout(surface: pygame.Surface, recordings: Sequence[Recording], frame: int, *,
                topleft: tuple[int, int] = (0, 0), world_px: int = WORLD_PX, hud_px: int = HUD_PX) -> None:
    """Draw recordings side by side at the same ``frame``, sharing one camera so they compare directly."""
    camera = fit_camera(recordings, (world_px, world_px))
    for i, rec in enumerate(recordings):
        draw_frame(surface, rec, frame, camera, topleft=(topleft[0] + i * world_px, topleft[1]),
                   world_px=world_px, hud_px=hud_px)
        if i:
            x = topleft[0] + i * world_px
            pygame.draw.line(surface, (0, 0, 0), (x, topleft[1]), (x, topleft[1] + world_px + hud_px), 2)


def n_layout_frames(recordings: Sequence[Recording]) -> int:
    """Frames needed to play every recording of a layout to its end."""
    return max((rec.n_frames for rec in recordings), default=0)


def render_layout(recordings: Sequence[Recording], frame: int, *, world_px: int = WORLD_PX,
                  hud_px: int = HUD_PX) -> np.ndarray:
    """The layout at ``frame`` as an ``[H, W, 3]`` uint8 array (offscreen; no display needed)."""
    surface = pygame.Surface(layout_size(len(recordings), world_px=world_px, hud_px=hud_px))
    draw_layout(surface, recordings, frame, world_px=world_px, hud_px=hud_px)
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).swapaxes(0, 1))


def layout_frame_indices(recordings: Sequence[Recording], *, stride: int = 1) -> list[int]:
    """Every ``stride``-th frame index of the layout, always ending on the last frame."""
    n = n_layout_frames(recordings)
    indices = list(range(0, n, max(1, stride)))
    if indices and indices[-1] != n - 1:
        indices.append(n - 1)
    return indices


def iter_layout_frames(recordings: Sequence[Recording], *, stride: int = 1, world_px: int = WORLD_PX,
                       hud_px: int = HUD_PX) -> Iterator[np.ndarray]:
    """The layout at :func:`layout_frame_indices` as ``[H, W, 3]`` arrays."""
    for frame in layout_frame_indices(recordings, stride=stride):
        yield render_layout(recordings, frame, world_px=world_px, hud_px=hud_px)


# ----------------------------------------------------------------------------------------------------------
# Scenario preview: start positions, routes and conflict-zone arrival times of sampled tasks (no recording)

#: Colour of the conflict-zone marker, and of a preview line that flags a close call.
CONFLICT_COLOR = (255, 150, 40)
#: Side of one preview panel's world view [px], and the height of its text band [px].
PREVIEW_WORLD_PX = 360
PREVIEW_TEXT_PX = 58


@dataclass(frozen=True)
class ScenePreview:
    """One sampled task as a preview panel shows it (plain data; built by ``intersection_meta.preview``).

    Attributes:
        vehicles: ``(x_m, y_m, heading_rad, speed_mps)`` of each vehicle at the start, ego first.
        other_driver: The other vehicle's driver model (its colour, as in the viewer).
        routes: Each vehicle's route as world points ``[N, 2]`` [m], from its start to its exit.
        conflict_m: Where the two routes first come within a car width of each other, or None.
        lines: Text lines below the world view, each ``(text, highlighted)``.
    """

    vehicles: tuple[tuple[float, float, float, float], ...]
    other_driver: str
    routes: tuple[np.ndarray, ...]
    conflict_m: tuple[float, float] | None
    lines: tuple[tuple[str, bool], ...]


def preview_camera(previews: Sequence[ScenePreview], size_px: tuple[int, int] = (PREVIEW_WORLD_PX,) * 2, *,
                   margin_m: float = 6.0) -> Camera:
    """One camera for every panel of a preview grid (so panels compare directly), fitting the junction and every
    vehicle's start."""
    points = np.array([[-25.0, -25.0], [25.0, 25.0]] + [v[:2] for p in previews for v in p.vehicles])
    (x0, y0), (x1, y1) = points.min(axis=0) - margin_m, points.max(axis=0) + margin_m
    scaling = min(size_px[0] / (x1 - x0), size_px[1] / (y1 - y0))
    return Camera(((x0 + x1) / 2, (y0 + y1) / 2), float(scaling))


def draw_preview(surface: pygame.Surface, preview: ScenePreview, camera: Camera, *, topleft: tuple[int, int] = (0, 0),
                 world_px: int = PREVIEW_WORLD_PX, text_px: int = PREVIEW_TEXT_PX, vehicles: bool = True) -> None:
    """Draw one preview panel: highway-env's road, both routes, the conflict zone, the vehicles at their start
    with their speeds, and the text lines below. ``vehicles=False`` leaves out everything but the road."""
    from highway_env.vehicle.graphics import VehicleGraphics
    from highway_env.vehicle.kinematics import Vehicle

    size = (world_px, world_px)
    world = _world_surface(size, camera)
    world.blit(_road_background(size, camera), (0, 0))
    colors = (EGO_COLOR, OTHER_COLORS.get(preview.other_driver, OTHER_COLORS["idm"]))
    if vehicles:
        for route, color in zip(preview.routes, colors, strict=True):
            points = [world.pos2pix(x, y) for x, y in np.asarray(route)]
            if len(points) > 1:
                pygame.draw.lines(world, tuple(c // 2 + 60 for c in color), False, points, 3)
        if preview.conflict_m is not None:
            pygame.draw.circle(world, CONFLICT_COLOR, world.pos2pix(*preview.conflict_m), 6, 2)
        tags, anchors = [], []
        for index, ((x_m, y_m, heading, speed), color) in enumerate(zip(preview.vehicles, colors, strict=True)):
            vehicle = Vehicle(None, np.array([x_m, y_m]), float(heading), float(speed))
            vehicle.color = color
            pygame.draw.circle(world, color, world.pos2pix(x_m, y_m), 9, 2)  # a ring: findable at any zoom
            VehicleGraphics.display(vehicle, world, offscreen=True)
            tags.append(_font(15).render(f"{VEHICLE_LABELS[index]} {speed:.1f} m/s", True, TEXT))
            anchors.append(world.pos2pix(x_m, y_m))
        for tag, (x, y, _, _) in zip(tags, place_labels(anchors, [t.get_size() for t in tags], size), strict=True):
            world.blit(tag, (x, y))
    surface.blit(world, topleft)
    if text_px > 0:
        band = pygame.Surface((world_px, text_px))
        band.fill(HUD_BG)
        y = 4
        for i, (text, highlighted) in enumerate(preview.lines):
            color = CONFLICT_COLOR if highlighted else (TEXT if i == 0 else DIM_TEXT)
            image = _font(17, bold=i == 0).render(text, True, color)
            band.blit(image, (6, y))
            y += image.get_height() + 2
        surface.blit(band, (topleft[0], topleft[1] + world_px))


def render_preview_grid(previews: Sequence[ScenePreview], *, columns: int = 4, world_px: int = PREVIEW_WORLD_PX,
                        text_px: int = PREVIEW_TEXT_PX, vehicles: bool = True) -> np.ndarray:
    """Preview panels in a grid of ``columns``, sharing one camera, as an ``[H, W, 3]`` uint8 array (offscreen)."""
    columns = max(1, min(columns, len(previews)))
    rows = -(-len(previews) // columns)
    panel_h = world_px + text_px
    surface = pygame.Surface((columns * world_px, max(1, rows) * panel_h))
    surface.fill((0, 0, 0))
    camera = preview_camera(previews, (world_px, world_px))
    for i, preview in enumerate(previews):
        topleft = ((i % columns) * world_px, (i // columns) * panel_h)
        draw_preview(surface, preview, camera, topleft=topleft, world_px=world_px, text_px=text_px, vehicles=vehicles)
    for c in range(1, columns):
        pygame.draw.line(surface, (0, 0, 0), (c * world_px, 0), (c * world_px, surface.get_height()), 2)
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).swapaxes(0, 1))
