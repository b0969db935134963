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


def test_console_script_shim_runs_the_viewer(tmp_path):
    code = (
        "import sys; from intersection_meta.replay_cli import main; "
        f"sys.argv = ['x', '--recording', {str(FIXTURE)!r}, '--snapshot', {str(tmp_path / 's.png')!r}]; "
        "sys.exit(main())"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "SDL_VIDEODRIVER": "offscreen", "PYTHONPATH": ""},
    )
    assert (tmp_path / "s.png").is_file()


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


def _viewer(display: str, *extra: str, keys: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SDL_VIDEODRIVER"}
    env.update(DISPLAY=display, SDL_AUDIODRIVER="dummy")
    if keys is not None:
        env[replay.SCRIPT_ENV] = keys
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


def test_real_window_scripted_keys_exercise_every_handler(xdisplay):
    keys = "right,right,left,h,h,t,t,t,=,-,space,wait,r,1,2,n,space,escape"
    process = _viewer(xdisplay, keys=keys)
    try:
        assert process.wait(timeout=30) == 0, process.communicate()[1].decode()
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

    ckpt = load_checkpoint(tiny_checkpoint)
    act = replay.make_policy_act(ckpt.policy, ckpt.params, greedy=True, seed=0)
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with torch.no_grad():
        logits = ckpt.policy.distribution(torch.as_tensor(obs), ckpt.params).logits.numpy()
    assert [act(o) for o in obs] == list(logits.argmax(axis=1))
    sampled = replay.make_policy_act(ckpt.policy, ckpt.params, greedy=False, seed=0)
    again = replay.make_policy_act(ckpt.policy, ckpt.params, greedy=False, seed=0)
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


def test_real_window_next_task_with_a_checkpoint(xdisplay, tiny_checkpoint):
    env = {k: v for k, v in os.environ.items() if k != "SDL_VIDEODRIVER"}
    env.update(DISPLAY=xdisplay, SDL_AUDIODRIVER="dummy", **{replay.SCRIPT_ENV: "n,wait,right,t,q"})
    process = subprocess.run(
        [sys.executable, "-m", "viz.replay", "--checkpoint", str(tiny_checkpoint)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.count("task (seed") == 2  # the first task, then the one sampled by "n"
