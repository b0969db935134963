"""Interactive replay of recorded episodes, and headless GIF / MP4 / PNG export.

Usage (``python -m viz.replay`` from a checkout, or the ``intersection-meta-replay`` console script from any
install; the installed copy of this folder is ``intersection_meta.viz``)::

    python -m viz.replay --recording runs/rec.npz                      # replay a saved file (no torch needed)
    python -m viz.replay --checkpoint ckpt.pt --adapt-steps 3 --episodes 2 --save rec.npz
    python -m viz.replay --checkpoint ckpt.pt --set other.speed_mps=8 --set other.time_gap_s=0.5
    python -m viz.replay --recording rec.npz --export out.gif           # headless, no window
    python -m viz.replay --recording rec.npz --snapshot out.png --step 4

With ``--checkpoint`` (a file, a run directory, or a shipped policy by name: ``yield_left``,
``policies:yield_left_directed_maml``) it samples a task from the scenario (``--task-seed``; ``--set`` fixes
parameters), adapts the meta-trained policy to it and records each episode twice on the highway-env backend, with
the pre-adaptation and with the adapted parameters (``intersection_meta.recording.record_adaptation``). The two
recordings of an episode are shown side by side (``t`` toggles to one at a time). Without ``--task-seed`` it opens
on a task where adaptation changes the outcome: the one a shipped policy's ``index.yaml`` entry names
(``showcase``), else the first of a few sampled tasks where the outcomes before and after adaptation differ.

Keys: see :data:`HELP_LINES` (``h`` in the viewer). A frame is one simulation frame (15 Hz for the
intersection); a *step* is one decision step (1 Hz).

Errors a user can cause (no display, corrupt file, checkpoint/scenario mismatch, bad ``--set``) print one
line and exit with status 2. torch is imported only when ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from intersection_meta.recording import (
    Recording,
    RecordingFileError,
    adaptation_changes_outcome,
    load_recordings,
    record_adaptation,
    save_recordings,
)

PROG = "intersection-meta-replay"
TAB_PX = 28
SPEEDS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Without --task-seed, how many sampled tasks the viewer tries for one where adaptation changes the outcome.
OPENING_CANDIDATES = 8
#: Longest wait for an event when nothing moves [ms].
IDLE_WAIT_MS = 1000
#: How often a waiting viewer looks for events [s]: the key-press latency. ``pygame.event.wait`` would answer
#: sooner but polls every millisecond inside pygame-ce (about 2% of a core); sleeping 20 ms between looks costs 0.5%.
EVENT_POLL_S = 0.02
#: GIF frame durations are whole centiseconds; the final frame is held this long so the outcome can be read.
GIF_END_HOLD_S = 1.0

HELP_LINES: tuple[str, ...] = (
    "space        play / pause",
    "right/left   one decision step forward / back (shift: one frame)",
    "+ / -        faster / slower",
    "r            restart the episode",
    "t            side by side <-> one recording at a time (cycles)",
    "1-9 / click  pick an episode (tabs at the top)",
    "n            next task: sample, adapt, record (needs --checkpoint)",
    "h            this help",
    "q / Esc      quit",
)


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------------
# Viewer state: pure transitions, testable without a window
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewState:
    """What the viewer shows. ``view`` 0 = all recordings of the episode side by side, ``i`` = only the i-th."""

    recordings: tuple[Recording, ...]
    episode: int = 0  # index into episode_ids()
    view: int = 0
    frame: float = 0.0
    playing: bool = True
    speed_index: int = SPEEDS.index(1.0)
    show_help: bool = False
    status: str = ""

    def episode_ids(self) -> list[int]:
        return sorted({r.episode for r in self.recordings})

    def group(self) -> list[Recording]:
        """Recordings of the selected episode, in file order (pre-adaptation first)."""
        ids = self.episode_ids()
        return [r for r in self.recordings if r.episode == ids[min(self.episode, len(ids) - 1)]]

    def shown(self) -> list[Recording]:
        group = self.group()
        return group if self.view == 0 or self.view > len(group) else [group[self.view - 1]]

    def n_frames(self) -> int:
        return max(r.n_frames for r in self.shown())

    def decision_frames(self) -> np.ndarray:
        longest = max(self.shown(), key=lambda r: r.n_frames)
        return longest.decision_frames()

    def speed(self) -> float:
        return SPEEDS[self.speed_index]


def advance(state: ViewState, dt_s: float) -> ViewState:
    """Play for ``dt_s`` seconds of wall time (stops on the last frame)."""
    if not state.playing:
        return state
    rate_hz = state.shown()[0].frame_rate_hz
    frame = state.frame + dt_s * rate_hz * state.speed()
    last = state.n_frames() - 1
    return replace(state, frame=min(frame, last), playing=frame < last)


def step_to(state: ViewState, direction: int, *, single_frame: bool) -> ViewState:
    """Pause and move one frame, or to the next / previous decision point, in ``direction`` (+1 / -1)."""
    current = round(state.frame)
    if single_frame:
        target = current + direction
    else:
        points = state.decision_frames()
        later, earlier = points[points > current], points[points < current]
        target = (later[0] if len(later) else current) if direction > 0 else (earlier[-1] if len(earlier) else 0)
    return replace(state, frame=float(np.clip(target, 0, state.n_frames() - 1)), playing=False)


def select_episode(state: ViewState, index: int) -> ViewState:
    if 0 <= index < len(state.episode_ids()):
        return replace(state, episode=index, frame=0.0, playing=True, status="")
    return replace(state, status=f"no episode {index + 1} (have {len(state.episode_ids())})")


def handle_key(state: ViewState, key_name: str, *, shift: bool = False) -> ViewState | str:
    """New state after a key (pygame key name), or the command ``"quit"`` / ``"next_task"``."""
    if key_name in ("q", "escape"):
        return "quit"
    if key_name == "n":
        return "next_task"
    if key_name == "space":
        restart = not state.playing and state.frame >= state.n_frames() - 1
        return replace(state, playing=not state.playing, frame=0.0 if restart else state.frame)
    if key_name in ("right", "left"):
        return step_to(state, 1 if key_name == "right" else -1, single_frame=shift)
    if key_name in ("+", "=", "[+]"):
        return replace(state, speed_index=min(state.speed_index + 1, len(SPEEDS) - 1))
    if key_name in ("-", "[-]"):
        return replace(state, speed_index=max(state.speed_index - 1, 0))
    if key_name == "r":
        return replace(state, frame=0.0, playing=True)
    if key_name == "t":
        return replace(state, view=(state.view + 1) % (len(state.group()) + 1))
    if key_name == "h":
        return replace(state, show_help=not state.show_help)
    if len(key_name) == 1 and key_name in "123456789":
        return select_episode(state, int(key_name) - 1)
    return state


# ----------------------------------------------------------------------------------------------------------
# Drawing the window (tabs + layout + overlays)
# ----------------------------------------------------------------------------------------------------------


def tab_rects(state: ViewState) -> list[tuple[int, int, int, int]]:
    """Clickable tab rectangles (x, y, w, h), one per episode."""
    return [(4 + i * 96, 3, 92, TAB_PX - 6) for i in range(len(state.episode_ids()))]


def tab_titles(state: ViewState) -> list[str]:
    """Tab texts: ``episode N`` with the same 1-based N as the HUD, the ``1``-``9`` keys and ``--episode``."""
    from .draw import episode_number

    return [f"episode {episode_number(e)}" for e in state.episode_ids()]


def window_size(recordings: Sequence[Recording]) -> tuple[int, int]:
    from .draw import layout_size

    panels = max(sum(1 for r in recordings if r.episode == e) for e in {r.episode for r in recordings})
    w, h = layout_size(panels)
    return w, h + TAB_PX


def draw_window(surface: Any, state: ViewState) -> None:
    import pygame

    from .draw import _font, draw_layout

    surface.fill((12, 12, 14))
    for i, (rect, title) in enumerate(zip(tab_rects(state), tab_titles(state), strict=True)):
        pygame.draw.rect(surface, (70, 110, 170) if i == state.episode else (45, 45, 55), rect, border_radius=4)
        surface.blit(_font(18).render(title, True, (235, 235, 235)), (rect[0] + 6, rect[1] + 4))
    mode = "side by side" if len(state.shown()) > 1 else state.shown()[0].label
    info = f"{'playing' if state.playing else 'paused'}  {state.speed():g}x  |  {mode}  |  h: help" + (
        f"  |  {state.status}" if state.status else ""
    )
    text = _font(18).render(info, True, (200, 200, 200))
    surface.blit(text, (surface.get_width() - text.get_width() - 8, 8))
    draw_layout(surface, state.shown(), round(state.frame), topleft=(0, TAB_PX))
    if state.show_help:
        box = pygame.Surface((560, 30 + 22 * len(HELP_LINES)), pygame.SRCALPHA)
        box.fill((0, 0, 0, 215))
        for i, line in enumerate(("keys", *HELP_LINES)):
            key, _, text = line.partition("  ")
            box.blit(_font(20, bold=True).render(key, True, (240, 240, 240)), (14, 8 + 22 * i))
            box.blit(_font(20).render(text.strip(), True, (240, 240, 240)), (130, 8 + 22 * i))
        surface.blit(box, box.get_rect(center=surface.get_rect().center))


# ----------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------


def gif_durations_ms(frame_times_s: Sequence[float], *, end_hold_s: float = GIF_END_HOLD_S) -> list[int]:
    """Per-frame GIF durations [ms] that start frame ``i`` at ``frame_times_s[i]`` (to the centisecond).

    GIF stores whole centiseconds, so a constant 1/15 s would be written as 60 ms and play 10% fast; rounding the
    start times instead gives 70, 70, 60, 70, 70, 60, ... ms, which keeps the average exact. The last frame is held
    ``end_hold_s``. Every duration is at least 20 ms (browsers slow shorter frames down to 100 ms).

    >>> gif_durations_ms([0, 1 / 15, 2 / 15, 3 / 15], end_hold_s=0.5)
    [70, 60, 70, 500]
    """
    starts_cs = np.round(np.asarray(frame_times_s, dtype=float) * 100).astype(np.int64)
    ends_cs = np.append(starts_cs[1:], starts_cs[-1] + round(end_hold_s * 100))
    return [int(max(2, d)) * 10 for d in ends_cs - starts_cs]


def export_video(path: str | Path, recordings: Sequence[Recording], *, max_fps: float = 15.0) -> int:
    """Write the side-by-side layout of ``recordings`` to ``.gif`` (Pillow) or ``.mp4`` (imageio-ffmpeg).

    Frames are subsampled so the file plays in real time at most ``max_fps`` (GIF: at most 50 fps, its finest
    timing). Returns the frame count.
    """
    from .draw import iter_layout_frames, layout_frame_indices

    path = Path(path)
    rate_hz = recordings[0].frame_rate_hz
    gif = path.suffix.lower() == ".gif"
    stride = max(1, math.ceil(rate_hz / (min(max_fps, 50.0) if gif else max_fps)))
    path.parent.mkdir(parents=True, exist_ok=True)
    if gif:
        from PIL import Image

        images = [Image.fromarray(a) for a in iter_layout_frames(recordings, stride=stride)]
        frame_times_s = [i / rate_hz for i in layout_frame_indices(recordings, stride=stride)]
        images[0].save(
            path,
            save_all=True,
            append_images=images[1:],
            duration=gif_durations_ms(frame_times_s),
            loop=0,
            optimize=False,
        )
        return len(images)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError as err:
            raise UsageError(
                "MP4 export needs imageio-ffmpeg (pip install imageio-ffmpeg); or export a GIF: --export out.gif"
            ) from err
        frames = iter_layout_frames(recordings, stride=stride)
        first = next(frames)
        writer = imageio_ffmpeg.write_frames(
            str(path), (first.shape[1], first.shape[0]), fps=rate_hz / stride, macro_block_size=1, quality=7
        )
        writer.send(None)
        count = 0
        for frame in (first, *frames):
            writer.send(np.ascontiguousarray(frame).tobytes())
            count += 1
        writer.close()
        return count
    raise UsageError(f"--export {path}: unknown format {path.suffix!r}; use .gif or .mp4")


def snapshot(path: str | Path, recordings: Sequence[Recording], step: int | None) -> int:
    """Save the layout at decision step ``step`` (default: the last) as an image. Returns the frame index."""
    from PIL import Image

    from .draw import render_layout

    longest = max(recordings, key=lambda r: r.n_frames)
    points = longest.decision_frames()
    if step is not None and not 0 <= step < len(points):
        raise UsageError(f"--step {step}: the episode has steps 0..{len(points) - 1}")
    frame = int(points[-1 if step is None else step])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_layout(recordings, frame)).save(path)
    return frame


# ----------------------------------------------------------------------------------------------------------
# Recording from a checkpoint (torch imported lazily, only here)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CheckpointSource:
    """Tasks to show from a checkpoint: each call of :meth:`record_next` samples, adapts and records the next one.

    Attributes:
        checkpoint: The loaded checkpoint.
        scenario: The scenario tasks are sampled from.
        adapt_steps: Inner adaptation steps.
        episodes: Episodes recorded per policy.
        backend: Simulator of the adaptation rollouts.
        greedy: Act with the most likely action.
        task_seed: Seed of the next sampled task.
        fixed_task: A task given by ``--task-id``: shown first, then ``n`` samples new tasks as usual.
        opening_candidates: For the first task only: how many seeds to try for one where adaptation changes the
            outcome (1 = take the first).
    """

    checkpoint: Any
    scenario: Any
    adapt_steps: int
    episodes: int
    backend: str
    greedy: bool
    task_seed: int
    fixed_task: Any = None
    opening_candidates: int = 1

    def record(self, task: Any = None) -> list[Recording]:
        recordings = record_adaptation(
            self.checkpoint, task_seed=self.task_seed, task=task, scenario=self.scenario,
            adapt_steps=self.adapt_steps, episodes=self.episodes, greedy=self.greedy, backend=self.backend,
        )
        where = "logged by the run" if task is not None else f"seed {self.task_seed}"
        print(f"task ({where}): {recordings[0].task_value().describe()}", flush=True)
        for rec in recordings:
            print(f"  episode {rec.episode + 1} {rec.label:>22}: {rec.outcome:9} return {rec.total_reward:+.2f}",
                  flush=True)
        self.task_seed += 1
        return recordings

    def record_next(self) -> list[Recording]:
        if self.fixed_task is not None:
            task, self.fixed_task = self.fixed_task, None
            return self.record(task)
        tries, self.opening_candidates = max(1, self.opening_candidates), 1
        for _ in range(tries):
            recordings = self.record()
            if tries == 1 or adaptation_changes_outcome(recordings):
                return recordings
        print(f"  (no task among {tries} sampled ones ends differently before and after adaptation; "
              "showing the last; n: next task)", flush=True)
        return recordings


def _spaces_signature(task: Any) -> tuple:
    from intersection_meta.envs.factory import observation_and_action_spaces

    obs_space, action_space = observation_and_action_spaces(task)
    return task.kind, tuple(obs_space.shape), repr(action_space)


def _opening_seed(checkpoint_path: str, args: argparse.Namespace) -> tuple[int, int]:
    """``(first task seed, candidates to try)``: ``--task-seed`` as given, else the shipped policy's showcase
    task (``policies/index.yaml``), else a search from seed 0 for a task where adaptation changes the outcome."""
    from intersection_meta.resources import shipped_policy_entry

    if args.task_seed is not None or args.adapt_steps == 0:  # nothing to compare without adaptation
        return args.task_seed or 0, 1
    entry = shipped_policy_entry(checkpoint_path) or {}
    showcase = entry.get("showcase") if not (args.set or args.scenario) else None
    if isinstance(showcase, dict) and isinstance(showcase.get("task_seed"), int):
        return showcase["task_seed"], OPENING_CANDIDATES
    return 0, OPENING_CANDIDATES


def open_checkpoint_source(args: argparse.Namespace) -> CheckpointSource:
    try:
        from intersection_meta.checkpoint import load_checkpoint, run_dir_of
        from intersection_meta.cli.options import set_torch_threads
    except ImportError as err:
        raise UsageError(
            f"--checkpoint needs torch and intersection_meta.checkpoint, which are not available ({err}); "
            "replay a saved file with --recording"
        ) from err
    from intersection_meta.scenario import Scenario, ScenarioError, apply_overrides, load_scenario

    set_torch_threads(1)  # the networks are tiny: more threads only slow the adaptation rollouts down
    try:
        checkpoint = load_checkpoint(args.checkpoint)
    except ValueError as err:  # CheckpointError / ScenarioError carry a one-line message naming the file
        raise UsageError(str(err).splitlines()[0]) from err
    except Exception as err:
        raise UsageError(f"{args.checkpoint}: cannot load checkpoint ({type(err).__name__}: {err})") from err
    path = checkpoint.path
    trained = checkpoint.scenario
    try:
        if args.scenario:
            scenario = load_scenario(args.scenario, args.set)
        elif args.set:
            source = f"{trained.name} (from {path}, with --set {' '.join(args.set)})"
            scenario = Scenario.from_dict(apply_overrides(trained.to_dict(), args.set, source), source=source)
        else:
            scenario = trained
    except (ScenarioError, FileNotFoundError, ValueError) as err:
        raise UsageError(str(err).splitlines()[0]) from err
    if scenario.name != trained.name or args.set:
        want, have = _spaces_signature(trained.medium_task()), _spaces_signature(scenario.medium_task())
        if want != have:
            raise UsageError(
                f"checkpoint {path} was trained on scenario {trained.name!r} ({want[0]}, observation "
                f"{want[1]}, actions {want[2]}), which does not match scenario {scenario.name!r} "
                f"({have[0]}, observation {have[1]}, actions {have[2]})"
            )
    fixed_task = None
    if args.task_id:
        from intersection_meta.trainer import find_logged_task

        run_dir = run_dir_of(args.checkpoint)
        fixed_task = find_logged_task(run_dir, args.task_id) if run_dir is not None else None
        if fixed_task is None:
            where = f"in {run_dir}'s tasks.jsonl or evaluation.json" if run_dir else "logged: not a run's checkpoint"
            raise UsageError(f"task {args.task_id} is not {where} (the tasks logged by the run that wrote "
                             "this checkpoint); use --task-seed or --set to choose a task")
    task_seed, candidates = _opening_seed(path, args)
    return CheckpointSource(
        checkpoint,
        scenario,
        args.adapt_steps,
        args.episodes,
        args.backend,
        greedy=not args.sample,
        task_seed=task_seed,
        fixed_task=fixed_task,
        opening_candidates=1 if fixed_task is not None else candidates,
    )


# ----------------------------------------------------------------------------------------------------------
# Window
# ----------------------------------------------------------------------------------------------------------


def check_display() -> None:
    """Raise :class:`UsageError` when no window can be opened."""
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    if driver in ("offscreen", "dummy"):
        raise UsageError(
            f"no display (SDL_VIDEODRIVER={driver}); export instead: --export out.gif or --snapshot out.png --step I"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError(
            "no display (DISPLAY is not set); export instead: --export out.gif or --snapshot out.png --step I"
        )


def shown_key(state: ViewState) -> tuple:
    """Everything that changes the picture: the window is redrawn only when this changes."""
    return (id(state.recordings), state.episode, state.view, round(state.frame), state.playing, state.speed_index,
            state.show_help, state.status)


def wait_ms(state: ViewState) -> int:
    """How long the loop may wait for events: until the shown frame changes, or :data:`IDLE_WAIT_MS` when paused."""
    if not state.playing:
        return IDLE_WAIT_MS
    frames_per_s = state.shown()[0].frame_rate_hz * state.speed()
    frames_to_next = math.floor(state.frame + 0.5) + 0.5 - state.frame  # round(frame) changes after this many
    return max(1, min(IDLE_WAIT_MS, math.ceil(1000 * frames_to_next / frames_per_s)))


def wait_for_events(timeout_ms: int) -> list[Any]:
    """The pending pygame events, sleeping up to ``timeout_ms`` (in steps of :data:`EVENT_POLL_S`) until some come."""
    import pygame

    deadline_s = time.monotonic() + timeout_ms / 1000
    while not (events := pygame.event.get()):
        left_s = deadline_s - time.monotonic()
        if left_s <= 0:
            break
        time.sleep(min(EVENT_POLL_S, left_s))
    return events


def run_window(state: ViewState, source: CheckpointSource | None) -> ViewState:
    """The interactive event loop; returns the state at exit.

    It sleeps until an event arrives or the next frame is due (:func:`wait_for_events`), and redraws only when
    :func:`shown_key` changes, so a paused viewer uses next to no CPU.
    """
    import pygame

    pygame.display.init()
    pygame.font.init()
    try:
        screen = pygame.display.set_mode(window_size(state.recordings))
    except pygame.error as err:
        raise UsageError(f"cannot open a window ({err}); export instead: --export out.gif") from err
    pygame.display.set_caption(f"{PROG}: {state.recordings[0].scenario}")
    drawn: tuple | None = None
    last_s = time.monotonic()
    while True:
        if shown_key(state) != drawn:
            draw_window(screen, state)
            pygame.display.flip()
            drawn = shown_key(state)
        events = wait_for_events(wait_ms(state))
        now_s = time.monotonic()
        state, last_s = advance(state, now_s - last_s), now_s
        for event in events:
            command: ViewState | str = state
            if event.type == pygame.QUIT:
                command = "quit"
            elif event.type in (pygame.WINDOWEXPOSED, pygame.VIDEOEXPOSE):
                drawn = None
            elif event.type == pygame.KEYDOWN:
                command = handle_key(state, pygame.key.name(event.key), shift=bool(event.mod & pygame.KMOD_SHIFT))
            elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1:
                for i, (x, y, w, h) in enumerate(tab_rects(state)):
                    if x <= event.pos[0] < x + w and y <= event.pos[1] < y + h:
                        command = select_episode(state, i)
            if command == "quit":
                pygame.display.quit()  # closes the window; fonts stay valid for a caller that draws on
                return state
            if command == "next_task":
                if source is None:
                    state = replace(state, status="n needs --checkpoint")
                    continue
                draw_window(screen, replace(state, status="adapting to a new task...", playing=False))
                pygame.display.flip()
                state = ViewState(tuple(source.record_next()))
                screen = pygame.display.set_mode(window_size(state.recordings))
                last_s = time.monotonic()
                continue
            state = command


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys:\n  " + "\n  ".join(HELP_LINES),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        help="meta-trained checkpoint: a .pt file, a run directory, or a shipped policy by name (yield_left, "
        "policies:yield_left_directed_maml); samples a task, adapts, records and replays",
    )
    src.add_argument("--recording", help="saved recordings (.npz) to replay; needs no torch and no checkpoint")
    p.add_argument("--scenario", help="scenario name or path (default: the checkpoint's own)")
    p.add_argument(
        "--task-seed",
        type=int,
        help="seed of the sampled task (n: next seed); default: a task where adaptation changes the outcome",
    )
    p.add_argument("--task-id", help="replay a task logged by the run (tasks.jsonl, evaluation.json), by its 8-hex ID")
    p.add_argument("--adapt-steps", type=int, default=1, help="inner adaptation steps K")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override, e.g. other.speed_mps=8 (repeatable)",
    )
    p.add_argument("--episodes", type=int, default=1, help="episodes recorded per policy")
    p.add_argument(
        "--backend",
        choices=("auto", "highway", "fast"),
        default="auto",
        help="simulator of the adaptation rollouts (auto: fast where it applies, bit-identical to highway-env); "
        "recordings always use highway-env",
    )
    p.add_argument("--sample", action="store_true", help="sample actions instead of taking the most likely one")
    p.add_argument("--save", help="write the recordings to this .npz")
    p.add_argument("--episode", type=int, default=1, help="episode shown first / exported (1-based)")
    p.add_argument("--export", help="write out.gif or out.mp4 of the episode (side by side) and exit")
    p.add_argument(
        "--export-fps",
        type=float,
        default=15.0,
        help="frame rate cap of --export (frames are subsampled to reach it; real-time playback)",
    )
    p.add_argument("--snapshot", help="write a PNG of one step of the episode and exit")
    p.add_argument("--step", type=int, help="decision step for --snapshot (0 = initial; default: last)")
    p.add_argument("--paused", action="store_true", help="start paused")
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.adapt_steps < 0 or args.episodes < 1:
        raise UsageError("--adapt-steps must be >= 0 and --episodes >= 1")
    if args.export_fps <= 0:
        raise UsageError("--export-fps must be > 0")
    if args.step is not None and not args.snapshot:
        raise UsageError("--step is used with --snapshot")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    headless = bool(args.export or args.snapshot)
    if headless:
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    else:
        check_display()
    source = None
    if args.recording:
        try:
            recordings = load_recordings(args.recording)
        except RecordingFileError as err:
            raise UsageError(str(err)) from err
        if not recordings:
            raise UsageError(f"{args.recording}: the file holds no recordings")
    else:
        source = open_checkpoint_source(args)
        recordings = source.record_next()
    if args.save:
        print(f"saved {len(recordings)} recordings to {save_recordings(args.save, recordings)}")
    state = select_episode(ViewState(tuple(recordings), playing=not args.paused), args.episode - 1)
    if state.status:
        raise UsageError(f"--episode {args.episode}: {state.status}")
    state = replace(state, playing=not args.paused)
    if args.snapshot:
        frame = snapshot(args.snapshot, state.group(), args.step)
        print(f"wrote {args.snapshot} (frame {frame})")
    if args.export:
        count = export_video(args.export, state.group(), max_fps=args.export_fps)
        print(f"wrote {args.export} ({count} frames)")
    if not headless:
        run_window(state, source)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
