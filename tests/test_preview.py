"""Scenario preview: routes and conflict-zone arrival times against closed forms, and panels checked in pixels."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intersection_meta.preview import CONFLICT_DISTANCE_M, ROUTE_STEP_M, render_preview, scene_preview, task_geometry
from intersection_meta.preview import viewer_draw as _viewer_draw
from intersection_meta.scenario import load_scenario

draw = _viewer_draw()


def test_viewer_draw_is_this_checkouts():
    assert Path(draw.__file__).resolve() == (Path(__file__).resolve().parents[1] / "viz" / "draw.py")


def test_perpendicular_straight_crossing_has_the_closed_form_conflict_times():
    task = load_scenario("cross_straight").medium_task()  # ego south->north, other west->east, both straight
    g = task_geometry(task)
    (ex, ey), (ox, oy) = g.ego.points_m[0], g.other.points_m[0]
    # straight lines: the ego runs along x = ex (y decreasing, northwards), the other along y = oy (x increasing)
    assert np.allclose(g.ego.points_m[: len(g.ego.points_m) // 2, 0], ex)
    assert np.allclose(g.other.points_m[: len(g.other.points_m) // 2, 1], oy)
    # the ego enters the zone a car width before the other's line, the other a car width before the ego's line
    ego_entry_m = (ey - oy) - CONFLICT_DISTANCE_M
    other_entry_m = (ex - ox) - CONFLICT_DISTANCE_M
    assert g.ego_arrival_s == pytest.approx(ego_entry_m / task.ego_speed_mps, abs=ROUTE_STEP_M / task.ego_speed_mps)
    assert g.other_arrival_s == pytest.approx(other_entry_m / task.other_speed_mps,
                                              abs=ROUTE_STEP_M / task.other_speed_mps)
    # each route starts its task's distance before its stop line (the end of its 100 m approach lane)
    network = draw.intersection_road().network
    for points, entry, dist in [(g.ego.points_m, "o0", task.ego_distance_to_stop_m),
                                (g.other.points_m, "o1", task.other_distance_to_stop_m)]:
        stop_line = network.get_lane((entry, "ir" + entry[1:], 0)).position(100.0, 0.0)
        assert np.hypot(*(points[0] - stop_line)) == pytest.approx(dist, abs=1e-9)


def test_parallel_opposite_straight_routes_have_no_conflict():
    task = replace(load_scenario("yield_left").medium_task(), ego_intent="straight")  # both straight, opposite
    g = task_geometry(task)
    assert g.conflict_m is None and g.ego_arrival_s is None
    assert any("no conflict" in text for text, _ in scene_preview(task).lines)


def _panel_pixels(tasks, vehicles: bool) -> np.ndarray:
    return render_preview(tasks, columns=2, vehicles=vehicles)


def test_preview_panels_show_each_vehicle_at_its_sampled_start_and_the_task_id():
    tasks = load_scenario("random_crossing").sample_tasks(4, seed=3)
    with_vehicles, road_only = _panel_pixels(tasks, True), _panel_pixels(tasks, False)
    w, h = draw.PREVIEW_WORLD_PX, draw.PREVIEW_WORLD_PX + draw.PREVIEW_TEXT_PX
    assert with_vehicles.shape == (2 * h, 2 * w, 3)
    previews = [scene_preview(t) for t in tasks]
    camera = draw.preview_camera(previews)
    for i, (task, preview) in enumerate(zip(tasks, previews, strict=True)):
        ox, oy = (i % 2) * w, (i // 2) * h
        for (x_m, y_m, heading, _), colour in zip(preview.vehicles, [draw.EGO_COLOR,
                                                                    draw.OTHER_COLORS[task.other_driver]], strict=True):
            px, py = draw.world_to_pixel(camera, (w, w), x_m, y_m)
            a, b = with_vehicles[oy + py, ox + px], road_only[oy + py, ox + px]
            assert not np.array_equal(a, b), f"panel {i}: vehicle not drawn at {px, py}"
            np.testing.assert_allclose(a, colour, atol=12)
            # 12 m behind the vehicle, beyond its body, ring and route, the road is untouched
            bx, by = draw.world_to_pixel(camera, (w, w), x_m - 12 * np.cos(heading), y_m - 12 * np.sin(heading))
            if 0 <= bx < w and 0 <= by < w:
                np.testing.assert_array_equal(with_vehicles[oy + by, ox + bx], road_only[oy + by, ox + bx])
        assert task.task_id in preview.lines[0][0]
        # the text band carries text (non-background pixels) in every panel
        band = with_vehicles[oy + w: oy + h, ox: ox + w]
        assert (np.abs(band.astype(int) - np.array(draw.HUD_BG)).sum(axis=-1) > 60).sum() > 200


def test_cli_preview_writes_the_png_and_refuses_other_kinds(tmp_path: Path):
    run = [sys.executable, "-m", "intersection_meta.scenarios", "preview"]
    out = tmp_path / "grid.png"
    done = subprocess.run([*run, "yield_left", "-n", "6", "--columns", "3", "--out", str(out)], capture_output=True,
                          text=True, check=True)
    assert "acceptance 6/6" in done.stdout
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * (draw.PREVIEW_WORLD_PX + draw.PREVIEW_TEXT_PX), 3 * draw.PREVIEW_WORLD_PX, 3)
    bad = subprocess.run([*run, "cartpole_physics", "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert bad.returncode == 2 and "preview draws intersection scenarios" in bad.stderr
    assert not (tmp_path / "x.png").exists()
