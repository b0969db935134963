"""The replay viewer: offscreen drawing, key handling, headless export, CLI errors, and a real window
under Xvfb (skipped when ``Xvfb`` / ``xdotool`` are not installed; CI installs the Debian packages
``xvfb`` and ``xdotool``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np
import pygame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from intersection_meta.recording import load_recordings
from viz import draw
from viz import replay

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "data" / "intersection_pair.npz"


@pytest.fixture(scope="module")
def pair():
    return load_recordings(FIXTURE)


def _pixels(surface: pygame.Surface) -> np.ndarray:
    return pygame.surfarray.array3d(surface).swapaxes(0, 1)  # [H, W, 3]


def test_world_to_pixel_matches_highway_env_world_surface():
    from highway_env.road.graphics import WorldSurface

    camera = draw.Camera((3.0, -7.5), 4.2)
    ws = WorldSurface((560, 560), 0, pygame.Surface((560, 560)))
    ws.scaling, ws.centering_position = camera.scaling_px_per_m, [0.5, 0.5]
    ws.move_display_window_to(np.array(camera.center_m))
    for x, y in [(0, 0), (10.5, -40.2), (-55, 33.3)]:
        assert draw.world_to_pixel(camera, (560, 560), x, y) == ws.pos2pix(x, y)


@pytest.mark.parametrize("frame", [0, 30, 60, 89])
def test_vehicles_are_drawn_where_the_recording_says(pair, frame):
    rec = pair[0]
    camera = draw.fit_camera([rec])
    with_vehicles, road_only = pygame.Surface((560, 680)), pygame.Surface((560, 680))
    draw.draw_frame(with_vehicles, rec, frame, camera)
    draw.draw_frame(road_only, rec, frame, camera, vehicles=False)
    a, b = _pixels(with_vehicles), _pixels(road_only)
    for vehicle, colour in [(0, draw.EGO_COLOR), (1, draw.OTHER_COLORS["idm"])]:
        x, y, heading, _, present, crashed = rec.frame_states[frame, vehicle]
        assert present == 1
        px, py = draw.world_to_pixel(camera, (560, 560), x, y)
        assert not np.array_equal(a[py, px], b[py, px]), f"vehicle {vehicle} not drawn at {px, py}"
        expected = draw.CRASH_COLOR if crashed else colour
        np.testing.assert_allclose(a[py, px], expected, atol=12)
        # one vehicle length (5 m) behind the vehicle, beyond its rectangle, the road is untouched
        bx, by = draw.world_to_pixel(camera, (560, 560), x - 6 * np.cos(heading), y - 6 * np.sin(heading))
        if frame == 0:
            np.testing.assert_array_equal(a[by, bx], b[by, bx])


def test_road_is_highway_env_intersection(pair):
    surface = pygame.Surface((560, 680))
    camera = draw.Camera((0.0, 0.0), 5.0)
    draw.draw_frame(surface, pair[0], 0, camera, vehicles=False)
    pixels = _pixels(surface)
    assert (
        tuple(pixels[280, 280]) == (100, 100, 100) or pixels[280, 280].max() >= 100
    )  # road grey or markings
    # highway-env paints lane lines white: the stop-line area has white markings
    assert (pixels[:560] == 255).all(axis=-1).sum() > 500


def test_hud_shows_task_action_reward_and_outcome(pair):
    pre, post = pair
    lines = [text for text, _ in draw.hud_lines(post, 0)]
    assert "adapted (1 steps)" in lines[0] and "arrived" in lines[0]
    assert any("ego south->straight" in t for t in lines)
    assert "action -" in lines[-1] and "reward so far +0.00" in lines[-1]
    last = [text for text, _ in draw.hud_lines(pre, pre.n_frames - 1)]
    assert "FASTER (2)" in last[-1] and f"reward so far {pre.total_reward:+.2f}" in last[-1]
    mid = post.decision_frames()[3] - 1  # inside step 3: two rewards known so far
    assert draw.completed_steps(post, mid) == 2
    assert f"{post.rewards[:2].sum():+.2f}" in draw.hud_lines(post, mid)[-1][0]


def test_rgb_recordings_draw_their_frames():
    from intersection_meta.envs.factory import make_env
    from intersection_meta.recording import record_episode
    from intersection_meta.scenario import load_scenario

    task = load_scenario("cartpole_physics").sample_tasks(1, seed=0)[0]
    rec = record_episode(make_env(task, render_mode="rgb_array"), lambda o: 1, seed=0, label="cp", task=task)
    first, last = draw.render_layout([rec], 0), draw.render_layout([rec], rec.n_frames - 1)
    assert first.shape == (680, 560, 3)
    assert not np.array_equal(first[:560], last[:560])


def test_view_state_transitions(pair):
    state = replay.ViewState(tuple(pair), playing=False)
    assert len(state.shown()) == 2 and state.n_frames() == max(r.n_frames for r in pair)
    state = replay.handle_key(state, "right")
    assert state.frame == 15 and not state.playing
    state = replay.handle_key(state, "right", shift=True)
    assert state.frame == 16
    state = replay.handle_key(state, "left")
    assert state.frame == 15
    state = replay.handle_key(state, "t")
    assert [r.label for r in state.shown()] == ["pre-adaptation"]
    state = replay.handle_key(replay.handle_key(state, "t"), "t")
    assert len(state.shown()) == 2
    faster = replay.handle_key(state, "+")
    assert faster.speed() == 2.0 and replay.handle_key(faster, "-").speed() == 1.0
    playing = replay.handle_key(state, "space")
    moved = replay.advance(playing, 0.5)
    assert moved.frame == pytest.approx(15 + 7.5)
    at_end = replay.advance(playing, 1000.0)
    assert at_end.frame == state.n_frames() - 1 and not at_end.playing
    assert replay.handle_key(at_end, "r").frame == 0
    assert replay.handle_key(state, "h").show_help
    assert replay.handle_key(state, "2").status.startswith("no episode 2")
    assert replay.handle_key(state, "q") == "quit" and replay.handle_key(state, "escape") == "quit"
    assert replay.handle_key(state, "n") == "next_task"


def test_window_drawing_offscreen(pair):
    state = replay.ViewState(tuple(pair), show_help=True)
    surface = pygame.Surface(replay.window_size(pair))
    replay.draw_window(surface, state)
    assert surface.get_size() == (1120, 680 + replay.TAB_PX)
    assert _pixels(surface).std() > 10


def test_gif_export(tmp_path, pair):
    path = tmp_path / "out.gif"
    count = replay.export_video(path, pair, max_fps=3.0)
    stride = 5  # 15 Hz recorded, capped at 3 fps
    n = max(r.n_frames for r in pair)
    expected = len(range(0, n, stride)) + (0 if (n - 1) % stride == 0 else 1)
    assert count == expected
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == expected and gif.size == (1120, 680)
        assert gif.info["duration"] == pytest.approx(1000 / 3, abs=10)  # GIF stores centiseconds
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert all(f.std() > 10 for f in frames)  # non-blank
    assert not np.array_equal(frames[0], frames[-1])


def test_gif_frames_play_at_the_recording_rate(tmp_path, pair):
    path = tmp_path / "real_time.gif"
    count = replay.export_video(path, pair, max_fps=15.0)
    indices = draw.layout_frame_indices(pair, stride=1)
    with Image.open(path) as gif:
        durations_ms = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations_ms.append(gif.info["duration"])
    assert len(durations_ms) == count == len(indices)
    # each frame starts when the simulation reaches it (15 Hz), to the centisecond GIF can store
    starts_s = np.concatenate([[0.0], np.cumsum(durations_ms[:-1]) / 1000])
    np.testing.assert_allclose(starts_s, np.asarray(indices) / pair[0].frame_rate_hz, atol=0.0051)
    assert durations_ms[-1] == 1000 * replay.GIF_END_HOLD_S  # then the outcome stays up for a moment


@settings(max_examples=300, deadline=None)
@given(
    anchors=st.lists(st.tuples(st.integers(0, 560), st.integers(0, 560)), min_size=2, max_size=2),
    same_place=st.booleans(),
)
def test_vehicle_labels_never_overlap(anchors, same_place):
    sizes = [draw._font(16).render(text, True, draw.TEXT).get_size() for text in draw.VEHICLE_LABELS]
    if same_place:
        anchors = [anchors[0], anchors[0]]
    rects = draw.place_labels(anchors, sizes, (560, 560))
    assert [r[2:] for r in rects] == sizes
    assert not draw.rects_overlap(rects[0], rects[1]), (anchors, rects)
    assert all(0 <= x and 0 <= y and x + w <= 560 and y + h <= 560 for x, y, w, h in rects), rects


def test_labels_of_coinciding_vehicles_are_drawn_apart(pair):
    rec = pair[0]
    states = rec.frame_states.copy()
    states[:, 1, :2] = states[:, 0, :2]  # the other vehicle on top of the ego
    from dataclasses import replace as dc_replace

    stacked = dc_replace(rec, frame_states=states)
    camera = draw.fit_camera([stacked])
    anchor = draw.world_to_pixel(camera, (560, 560), *states[0, 0, :2])
    sizes = [draw._font(16).render(t, True, draw.TEXT).get_size() for t in draw.VEHICLE_LABELS]
    ego_rect, other_rect = draw.place_labels([anchor, anchor], sizes, (560, 560))
    surface, bare = pygame.Surface((560, 560)), pygame.Surface((560, 560))
    draw.draw_world(surface, stacked, 0, camera, trail=False)
    draw.draw_world(bare, stacked, 0, camera, trail=False, vehicles=False)
    changed = (_pixels(surface) != _pixels(bare)).any(axis=-1)
    for x, y, w, h in (ego_rect, other_rect):  # each label's box has text pixels in it
        assert changed[y : y + h, x : x + w].any()
    assert not draw.rects_overlap(ego_rect, other_rect)


def test_tabs_and_hud_number_episodes_alike(pair):
    from dataclasses import replace as dc_replace

    recs = (*pair, *(dc_replace(r, episode=1) for r in pair))
    state = replay.select_episode(replay.ViewState(recs), 1)  # what key "2" and --episode 2 pick
    assert replay.tab_titles(state) == ["episode 1", "episode 2"]
    assert all(draw.hud_lines(r, 0)[0][0].startswith("episode 2:") for r in state.shown())


def _post_keys(*names: str) -> None:
    for name in names:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.key.key_code(name), mod=0))


def test_event_loop_runs_the_keys_it_receives(pair):
    pygame.display.init()
    _post_keys("right", "right", "q")
    final = replay.run_window(replay.ViewState(tuple(pair), playing=False), None)
    assert final.frame == pair[0].decision_frames()[2] and not final.playing
    pygame.display.init()
    _post_keys("h", "h", "t", "t", "t", "=", "-", "space", "r", "1", "2", "n", "space", "escape")
    final = replay.run_window(replay.ViewState(tuple(pair), playing=False), None)
    assert (final.view, final.show_help, final.speed(), final.playing) == (0, False, 1.0, False)
    assert final.status == "n needs --checkpoint"


def test_paused_viewer_sleeps_instead_of_redrawing(pair):
    """The paused loop sleeps between looks for events and draws once: next to no CPU over 2 s (it used to redraw
    at 60 fps, about 50-60% of a core)."""
    replay.draw_window(pygame.Surface(replay.window_size(pair)), replay.ViewState(tuple(pair)))  # warm caches
    pygame.display.init()
    pygame.time.set_timer(pygame.QUIT, 2000, loops=1)
    wall_s, cpu_s = time.monotonic(), time.process_time()
    replay.run_window(replay.ViewState(tuple(pair), playing=False), None)
    wall_s, cpu_s = time.monotonic() - wall_s, time.process_time() - cpu_s
    assert wall_s >= 1.9
    assert cpu_s / wall_s < 0.1, f"{cpu_s:.2f} s of CPU in {wall_s:.2f} s paused"


def test_cli_snapshot_and_export(tmp_path, capsys):
    png = tmp_path / "snap.png"
    assert replay.main(["--recording", str(FIXTURE), "--snapshot", str(png), "--step", "2"]) == 0
    with Image.open(png) as image:
        assert image.size == (1120, 680)
    gif = tmp_path / "a.gif"
    assert replay.main(["--recording", str(FIXTURE), "--export", str(gif), "--export-fps", "1"]) == 0
    assert Image.open(gif).n_frames >= 2


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--export", "x.gif"], "corrupt or unreadable recording file"),
        (["--snapshot", "x.png", "--step", "99"], "--step 99"),
        (["--export", "x.webm"], "unknown format"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, argv_tail, message):
    source = FIXTURE
    if "corrupt" in message:
        source = tmp_path / "bad.npz"
        source.write_bytes(FIXTURE.read_bytes()[:500])
    argv_tail = [str(tmp_path / a) if a.startswith("x.") else a for a in argv_tail]
    assert replay.main(["--recording", str(source), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_without_display_suggests_export(monkeypatch, capsys):
    monkeypatch.setenv("SDL_VIDEODRIVER", "offscreen")
    assert replay.main(["--recording", str(FIXTURE)]) == 2
    assert "--export" in capsys.readouterr().err


def test_mp4_export_or_clear_error(tmp_path, capsys):
    rc = replay.main(["--recording", str(FIXTURE), "--export", str(tmp_path / "a.mp4"), "--export-fps", "2"])
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        err = capsys.readouterr().err
        assert rc == 2 and "imageio-ffmpeg" in err and ".gif" in err
    else:
        assert rc == 0 and (tmp_path / "a.mp4").stat().st_size > 1000


def test_recording_replay_does_not_import_torch(tmp_path):
    code = (
        "import sys; from viz.replay import main; "
        f"rc = main(['--recording', {str(FIXTURE)!r}, '--snapshot', {str(tmp_path / 's.png')!r}]); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "SDL_VIDEODRIVER": "offscreen"}
    )


# ------------------------------------------------------------------------------------------------------
# A real window under Xvfb
# ------------------------------------------------------------------------------------------------------


@pytest.fixture
def xdisplay():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install -y --no-install-recommends xvfb)")
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = server.stdout.readline().decode().strip()
    if not line.isdigit():
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{line}"
    server.terminate()
    server.wait(timeout=10)


def _viewer(display: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SDL_VIDEODRIVER"}
    env.update(DISPLAY=display, SDL_AUDIODRIVER="dummy")
    return subprocess.Popen(
        [sys.executable, "-m", "viz.replay", "--recording", str(FIXTURE), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _grab(display: str) -> np.ndarray:
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))


def _wait_for_window(display: str, process: subprocess.Popen, timeout_s: float = 20.0) -> np.ndarray:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        shot = _grab(display)
        if shot.std() > 10:
            time.sleep(0.5)  # let it settle
            return _grab(display)
        time.sleep(0.2)
    raise AssertionError("the viewer window did not appear")


def test_real_window_steps_on_key_presses(xdisplay):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install -y --no-install-recommends xdotool)")
    process = _viewer(xdisplay, "--paused")
    try:
        before = _wait_for_window(xdisplay, process)
        time.sleep(0.3)
        assert np.array_equal(before, _grab(xdisplay)), "paused viewer should not change by itself"
        xdo = {**os.environ, "DISPLAY": xdisplay}
        subprocess.run(["xdotool", "mousemove", "640", "400"], env=xdo, check=True)
        subprocess.run(["xdotool", "key", "Right", "Right"], env=xdo, check=True)
        time.sleep(0.6)
        after = _grab(xdisplay)
        assert not np.array_equal(before, after), "stepping did not change the window"
        subprocess.run(["xdotool", "key", "q"], env=xdo, check=True)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------------------------------
# With a checkpoint: sample a task, adapt, record pre vs adapted (tiny CartPole run)
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from intersection_meta.config import make_config
    from intersection_meta.scenario import load_scenario
    from intersection_meta.trainer import train

    config = make_config(
        {
            "scenario": "cartpole_physics",
            "algo": "maml",
            "iterations": 1,
            "meta_batch_size": 2,
            "episodes_per_task": 2,
            "eval_tasks": 0,
            "hidden_sizes": [8, 8],
        }
    )
    scenario = load_scenario("cartpole_physics", ["episode.max_steps=30"])
    result = train(
        config, tmp_path_factory.mktemp("run") / "tiny", progress=False, tensorboard=False, scenario=scenario
    )
    return result.checkpoint


def test_checkpoint_replay_records_pre_and_adapted_episodes(tmp_path, tiny_checkpoint, capsys):
    saved, png = tmp_path / "rec.npz", tmp_path / "ck.png"
    argv = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--adapt-steps",
        "1",
        "--episodes",
        "2",
        "--task-seed",
        "4",
        "--save",
        str(saved),
        "--snapshot",
        str(png),
        "--episode",
        "2",
    ]
    assert replay.main(argv) == 0, capsys.readouterr().err
    recs = load_recordings(saved)
    assert [(r.episode, r.label) for r in recs] == [
        (0, "pre-adaptation"),
        (0, "adapted (1 step)"),
        (1, "pre-adaptation"),
        (1, "adapted (1 step)"),
    ]
    assert all(
        r.kind == "cartpole" and r.n_steps <= 30 and r.rgb_frames.shape[0] == r.n_steps + 1 for r in recs
    )
    assert len({r.task_value().task_id for r in recs}) == 1
    assert Image.open(png).size == (1120, 680)


def test_greedy_policy_act_takes_the_most_likely_action(tiny_checkpoint):
    import torch

    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.recording import policy_act

    from intersection_meta.envs.factory import observation_and_action_spaces

    ckpt = load_checkpoint(tiny_checkpoint)
    _, action_space = observation_and_action_spaces(ckpt.scenario.medium_task())
    act = policy_act(ckpt.policy, ckpt.params, action_space, greedy=True, seed=0)
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with torch.no_grad():
        logits = ckpt.policy.distribution(torch.as_tensor(obs), ckpt.params).logits.numpy()
    assert [act(o) for o in obs] == list(logits.argmax(axis=1))
    sampled = policy_act(ckpt.policy, ckpt.params, action_space, greedy=False, seed=0)
    again = policy_act(ckpt.policy, ckpt.params, action_space, greedy=False, seed=0)
    assert [sampled(o) for o in obs] == [again(o) for o in obs]  # seeded, no global RNG


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scenario", "yield_left"], "does not match scenario 'yield_left'"),
        (["--set", "physics.gravty_mps2=5"], "did you mean"),
    ],
)
def test_checkpoint_errors_are_one_line(tmp_path, tiny_checkpoint, capsys, extra, message):
    argv = ["--checkpoint", str(tiny_checkpoint), *extra, "--snapshot", str(tmp_path / "x.png")]
    assert replay.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_or_corrupt_checkpoint(tmp_path, capsys):
    assert (
        replay.main(["--checkpoint", str(tmp_path / "nope.pt"), "--snapshot", str(tmp_path / "x.png")]) == 2
    )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert replay.main(["--checkpoint", str(bad), "--snapshot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "nope.pt" in err[0] and "bad.pt" in err[1]


def test_next_task_key_records_a_new_task(tiny_checkpoint):
    from intersection_meta.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    source = replay.CheckpointSource(ckpt, ckpt.scenario, 1, 1, "auto", greedy=True, task_seed=3)
    first = replay.ViewState(tuple(source.record_next()))
    pygame.display.init()
    _post_keys("n", "q")
    final = replay.run_window(first, source)
    assert source.task_seed == 5
    assert final.recordings[0].task_value() == ckpt.scenario.sample_tasks(1, seed=4)[0]
    assert [r.label for r in final.recordings] == ["pre-adaptation", "adapted (1 step)"]


# ------------------------------------------------------------------------------------------------------
# The opening task: one where adaptation changes the outcome (the shipped yield_left policy)
# ------------------------------------------------------------------------------------------------------


def test_shipped_showcase_is_the_documented_task():
    from intersection_meta.resources import policy_index
    from intersection_meta.scenario import load_scenario

    showcase = policy_index()["yield_left_directed_maml.pt"]["showcase"]
    task = load_scenario("yield_left").sample_tasks(1, seed=showcase["task_seed"])[0]
    assert task.task_id == showcase["task_id"] == "37bccc52"


def test_viewer_opens_the_shipped_policy_where_adaptation_changes_the_outcome(tmp_path, capsys):
    saved = tmp_path / "rec.npz"
    argv = ["--checkpoint", "yield_left", "--save", str(saved), "--snapshot", str(tmp_path / "s.png")]
    assert replay.main(argv) == 0, capsys.readouterr().err
    pre, adapted = load_recordings(saved)
    assert pre.task_value().task_id == "37bccc52"
    assert (pre.outcome, adapted.outcome) == ("collided", "arrived")


def test_opening_search_skips_tasks_where_adaptation_changes_nothing(tmp_path):
    """Outside the shipped index the viewer searches: on yield_left, seeds 37 and 38 end alike before and after
    adaptation, seed 39 does not."""
    import shutil as sh

    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.recording import adaptation_changes_outcome
    from intersection_meta.resources import policy_dir

    copy = tmp_path / "policy.pt"
    sh.copy(policy_dir() / "yield_left_directed_maml.pt", copy)
    ckpt = load_checkpoint(copy)
    source = replay.CheckpointSource(ckpt, ckpt.scenario, 1, 1, "auto", greedy=True, task_seed=37,
                                     opening_candidates=4)
    recordings = source.record_next()
    assert recordings[0].task_value() == ckpt.scenario.sample_tasks(1, seed=39)[0] and source.task_seed == 40
    assert adaptation_changes_outcome(recordings)
    assert source.opening_candidates == 1  # only the first task is searched for


def test_record_adaptation_depends_only_on_its_arguments(tiny_checkpoint):
    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.recording import record_adaptation

    ckpt = load_checkpoint(tiny_checkpoint)
    first = record_adaptation(ckpt, task_seed=2, adapt_steps=1, episodes=1, greedy=False)
    again = record_adaptation(load_checkpoint(tiny_checkpoint), task_seed=2, adapt_steps=1, episodes=1, greedy=False)
    assert first == again and [r.label for r in first] == ["pre-adaptation", "adapted (1 step)"]
    assert first[0].task_value() == ckpt.scenario.sample_tasks(1, seed=2)[0]
    only_pre = record_adaptation(ckpt, task_seed=2, adapt_steps=0, episodes=2)
    assert [(r.episode, r.label) for r in only_pre] == [(0, "pre-adaptation"), (1, "pre-adaptation")]
