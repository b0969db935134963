"""Per-step recordings of single episodes, saved as pickle-free ``.npz`` files for the replay viewer.

A :class:`Recording` is a plain, frozen value: what the viewer (``viz/``) needs to redraw an episode
without torch, without a checkpoint and without re-simulating.

What is recorded
    * **Intersection tasks** (highway-env backend): the state of both vehicles at **every simulation
      frame** (15 Hz by default, i.e. 15 frames per 1 Hz decision step) plus the initial frame, so the
      replay is smooth and turning vehicles follow their real curves. Frame ``f`` has the columns of
      :data:`STATE_FIELDS`; vehicle 0 is the ego, vehicle 1 the other vehicle. ``present`` is 0 once
      highway-env has removed a vehicle from the road (it clears vehicles that leave the map).
      Frames are captured by wrapping the ``step`` method of this episode's ``Road`` instance (the road
      is rebuilt at every reset; the wrapper is removed when the episode ends; no class is touched).
    * **CartPole / LunarLander tasks**: the env's own ``rgb_array`` rendering, one frame per step plus
      the initial one, downscaled so the longer side is at most ``max_frame_side_px``.

Per decision step ``t`` (``T`` steps): ``actions[t]`` and ``rewards[t]``. Per frame ``f`` (``F`` frames):
``frame_step[f]`` is the number of decisions applied by that frame (0 for the initial frame, ``t + 1`` for
the frames simulated under action ``t``) and ``frame_time_s[f]`` the simulated time.

File format (``save_recordings``): one ``np.savez_compressed`` archive, loadable with
``allow_pickle=False``. Key ``__meta__`` holds a 1-element unicode array with a JSON document
(format version and, per recording, its metadata); the arrays of recording ``i`` are stored under
``"{i}/{name}"``.

This module imports neither torch nor pygame; :func:`record_adaptation` (sample-adapt-record, used by the viewer)
imports torch when it is called.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from intersection_meta.schema import abbreviate, shorten
from intersection_meta.tasks import Task, task_from_dict, task_to_dict

FORMAT = "intersection_meta.recording"
FORMAT_VERSION = 1

#: Columns of ``Recording.frame_states[f, vehicle]``.
STATE_FIELDS: tuple[str, ...] = ("x_m", "y_m", "heading_rad", "speed_mps", "present", "crashed")
OUTCOMES: tuple[str, ...] = ("arrived", "collided", "timed out", "terminated")

#: Names of discrete actions by task kind (highway-env's longitudinal DiscreteMetaAction, gymnasium's).
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "intersection": ("SLOWER", "IDLE", "FASTER"),
    "cartpole": ("push left", "push right"),
    "lunarlander": ("noop", "left engine", "main engine", "right engine"),
}

_ARRAY_FIELDS: tuple[str, ...] = ("actions", "rewards", "frame_step", "frame_time_s", "frame_states", "rgb_frames")


class RecordingFileError(ValueError):
    """A recording file is missing, corrupt or not a recording file (the message names the file)."""


@dataclass(frozen=True, eq=False)
class Recording:
    """One recorded episode (see the module docstring for the meaning of each array).

    Attributes:
        scenario: Scenario name (``task.scenario``).
        task: The task as a plain dict (:func:`intersection_meta.tasks.task_to_dict`).
        label: Free text shown by the viewer, e.g. ``"pre-adaptation"`` or ``"adapted (3 steps)"``.
        kind: ``"intersection"``, ``"cartpole"`` or ``"lunarlander"``.
        seed: Seed of the episode's ``env.reset``.
        episode: Episode index; the viewer groups recordings with the same index (e.g. pre vs post).
        outcome: ``"arrived"``, ``"collided"``, ``"timed out"`` or (auxiliary suites) ``"terminated"``.
        frame_rate_hz: Frames per simulated second (playback rate at speed 1x).
        action_names: Names of discrete actions, empty for continuous actions.
        actions: ``[T]`` (discrete) or ``[T, A]`` (continuous).
        rewards: ``[T]`` float64.
        frame_step: ``[F]`` int64, decisions applied by frame ``f``.
        frame_time_s: ``[F]`` float64.
        frame_states: ``[F, 2, 6]`` float64 (intersection), ``[0, 2, 6]`` otherwise.
        rgb_frames: ``[F, H, W, 3]`` uint8 (auxiliary suites), ``[0, 0, 0, 3]`` for intersections.
    """

    scenario: str
    task: dict
    label: str
    kind: str
    seed: int
    episode: int
    outcome: str
    frame_rate_hz: float
    action_names: tuple[str, ...]
    actions: np.ndarray
    rewards: np.ndarray
    frame_step: np.ndarray
    frame_time_s: np.ndarray
    frame_states: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, len(STATE_FIELDS))))
    rgb_frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))

    def __post_init__(self) -> None:
        # JSON-normalise the task dict (tuples -> lists) so a saved and reloaded recording compares equal.
        object.__setattr__(self, "task", json.loads(json.dumps(self.task)))
        object.__setattr__(self, "action_names", tuple(self.action_names))

    @property
    def n_steps(self) -> int:
        """Number of decision steps ``T``."""
        return len(self.rewards)

    @property
    def n_frames(self) -> int:
        """Number of frames ``F`` (initial frame included)."""
        return len(self.frame_step)

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards))

    def task_value(self) -> Task:
        """The task as its frozen dataclass."""
        return task_from_dict(self.task)

    def decision_frames(self) -> np.ndarray:
        """Index of the last frame of each decision step, with the initial frame first: ``[T + 1]``."""
        last = [0] + [int(np.flatnonzero(self.frame_step == t + 1)[-1]) for t in range(self.n_steps)]
        return np.asarray(last, dtype=np.int64)

    def decision_states(self) -> np.ndarray:
        """Vehicle states at the decision points (initial, then after each step): ``[T + 1, 2, 6]``."""
        return self.frame_states[self.decision_frames()]

    def criticality_series(self) -> np.ndarray:
        """Running criticality metrics at every frame of an intersection recording, ``[F, 4]`` in the order of
        :data:`intersection_meta.criticality.CRITICALITY_KEYS` (computed from ``frame_states`` by the same tracker
        the envs use; the value at a step's last frame equals the env's ``info["criticality"]`` after that step)."""
        from intersection_meta.criticality import recording_series

        if self.kind != "intersection":
            raise ValueError(f"criticality metrics exist for intersection recordings only, not {self.kind!r}")
        return recording_series(self.task_value(), self.frame_states, 1.0 / self.frame_rate_hz)

    def metadata(self) -> dict[str, Any]:
        """The non-array fields, JSON friendly."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self) if f.name not in _ARRAY_FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recording):
            return NotImplemented
        return self.metadata() == other.metadata() and all(
            np.array_equal(getattr(self, name), getattr(other, name)) for name in _ARRAY_FIELDS
        )

    __hash__ = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------------------
# Recording an episode
# ----------------------------------------------------------------------------------------------------------


def _vehicle_state(vehicle: Any, on_road: bool) -> list[float]:
    x_m, y_m = (float(c) for c in vehicle.position)
    return [x_m, y_m, float(vehicle.heading), float(vehicle.speed), float(on_road), float(vehicle.crashed)]


def _both_states(road: Any, ego: Any, other: Any | None) -> list[list[float]]:
    rows = [_vehicle_state(ego, ego in road.vehicles)]
    rows.append(_vehicle_state(other, other in road.vehicles) if other is not None else [0.0] * len(STATE_FIELDS))
    return rows


def _downscale(frame: np.ndarray, max_side_px: int) -> np.ndarray:
    """Integer-factor block average so the longer side is at most ``max_side_px`` (uint8 in and out)."""
    factor = int(np.ceil(max(frame.shape[:2]) / max_side_px))
    if factor <= 1:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    h, w = (frame.shape[0] // factor) * factor, (frame.shape[1] // factor) * factor
    blocks = frame[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _resolve_task(env: Any, task: Task | None) -> Task:
    if task is not None:
        return task
    for holder in (env, getattr(env, "unwrapped", None)):
        found = getattr(holder, "task", None)
        if found is not None:
            return found
    raise ValueError("record_episode: pass task=... (the env has no `task` attribute to read it from)")


def _intersection_outcome(info: dict, unwrapped: Any, terminated: bool) -> str:
    if info.get("crashed", getattr(unwrapped.vehicle, "crashed", False)):
        return "collided"
    if info.get("arrived", False) or (terminated and not unwrapped.vehicle.crashed):
        return "arrived"
    return "timed out"


def record_episode(
    env: Any,
    act: Callable[[np.ndarray], Any],
    *,
    seed: int,
    label: str,
    task: Task | None = None,
    episode: int = 0,
    max_steps: int = 10_000,
    max_frame_side_px: int = 300,
) -> Recording:
    """Run one episode of ``env`` with the policy ``act`` and record it.

    Args:
        env: A gymnasium env made by ``make_env(task, ...)``: for intersection tasks the highway-env
            backend (its ``unwrapped`` has ``road`` and ``vehicle``); for CartPole / LunarLander made with
            ``render_mode="rgb_array"``.
        act: Maps an observation (as returned by ``env``) to an action.
        seed: Seed of ``env.reset``.
        label: Text the viewer shows for this recording.
        task: The env's task; read from ``env.task`` / ``env.unwrapped.task`` when omitted.
        episode: Episode index used by the viewer to group recordings.
        max_steps: Safety limit on decision steps.
        max_frame_side_px: Longer side of the stored rgb frames (auxiliary suites).

    Returns:
        The :class:`Recording`.

    Raises:
        ValueError: If the env cannot be recorded (no task, fast backend, missing rgb rendering).
    """
    task = _resolve_task(env, task)
    obs, _ = env.reset(seed=seed)
    unwrapped = env.unwrapped
    if task.kind == "intersection":
        if getattr(unwrapped, "road", None) is None:
            raise ValueError("record_episode needs the highway-env intersection env (backend='highway')")
        return _record_intersection(env, act, obs, task, seed=seed, label=label, episode=episode,
                                    max_steps=max_steps)
    if getattr(env, "render_mode", None) != "rgb_array":
        raise ValueError(f"record_episode: make the {task.kind} env with render_mode='rgb_array' "
                         f"(got {getattr(env, 'render_mode', None)!r})")
    return _record_rgb(env, act, obs, task, seed=seed, label=label, episode=episode, max_steps=max_steps,
                       max_frame_side_px=max_frame_side_px)


def _record_intersection(env: Any, act: Callable, obs: Any, task: Task, *, seed: int, label: str,
                         episode: int, max_steps: int) -> Recording:
    unwrapped = env.unwrapped
    road, ego = unwrapped.road, unwrapped.vehicle
    other = next((v for v in road.vehicles if v is not ego), None)
    sim_hz = float(unwrapped.config["simulation_frequency"])
    frames: list[list[list[float]]] = [_both_states(road, ego, other)]
    frame_step: list[int] = [0]
    actions: list[Any] = []
    rewards: list[float] = []
    original_step = road.step

    def step_and_capture(dt: float, *args: Any, **kwargs: Any) -> None:
        original_step(dt, *args, **kwargs)
        frames.append(_both_states(road, ego, other))
        frame_step.append(len(actions))

    road.step = step_and_capture  # instance attribute: this episode's road only
    try:
        outcome, info, terminated = "timed out", {}, False
        for _ in range(max_steps):
            action = act(obs)
            actions.append(action)
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(float(reward))
            if terminated or truncated:
                break
        outcome = _intersection_outcome(info, unwrapped, terminated)
    finally:
        del road.step
    frame_step_arr = np.asarray(frame_step, dtype=np.int64)
    return Recording(
        scenario=task.scenario, task=task_to_dict(task), label=label, kind=task.kind, seed=int(seed),
        episode=int(episode), outcome=outcome, frame_rate_hz=sim_hz,
        action_names=ACTION_NAMES["intersection"] if task.settings.action == "discrete" else (),
        actions=np.asarray(actions), rewards=np.asarray(rewards, dtype=np.float64),
        frame_step=frame_step_arr, frame_time_s=np.arange(len(frame_step_arr), dtype=np.float64) / sim_hz,
        frame_states=np.asarray(frames, dtype=np.float64),
    )


def _record_rgb(env: Any, act: Callable, obs: Any, task: Task, *, seed: int, label: str, episode: int,
                max_steps: int, max_frame_side_px: int) -> Recording:
    rgb = [_downscale(np.asarray(env.render()), max_frame_side_px)]
    actions: list[Any] = []
    rewards: list[float] = []
    outcome = "timed out"
    for _ in range(max_steps):
        action = act(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        rgb.append(_downscale(np.asarray(env.render()), max_frame_side_px))
        if terminated or truncated:
            outcome = "terminated" if terminated else "timed out"
            break
    fps = float(env.metadata.get("render_fps", 50) or 50)
    discrete = not (task.kind == "lunarlander" and getattr(task, "continuous", False))
    n = len(rgb)
    return Recording(
        scenario=task.scenario, task=task_to_dict(task), label=label, kind=task.kind, seed=int(seed),
        episode=int(episode), outcome=outcome, frame_rate_hz=fps,
        action_names=ACTION_NAMES.get(task.kind, ()) if discrete else (),
        actions=np.asarray(actions), rewards=np.asarray(rewards, dtype=np.float64),
        frame_step=np.arange(n, dtype=np.int64), frame_time_s=np.arange(n, dtype=np.float64) / fps,
        rgb_frames=np.stack(rgb).astype(np.uint8),
    )


# ----------------------------------------------------------------------------------------------------------
# Sample a task, adapt to it, record both policies (torch is imported here, only when called)
# ----------------------------------------------------------------------------------------------------------


def policy_act(policy: Any, params: Any, action_space: Any, *, greedy: bool, seed: int) -> Callable[[Any], Any]:
    """``act(obs) -> action`` for one env, with the library's sampling (:func:`networks.sample_actions`).

    Args:
        policy: A functional policy (``policy.distribution(obs[B, D], params)``, see ``networks.py``).
        params: The parameters to act with (e.g. before or after adaptation).
        action_space: The env's action space (continuous actions are clipped to it, as in training rollouts).
        greedy: Take the most likely action (the mean for continuous actions) instead of sampling.
        seed: Seed of the sampling generator (no global RNG is used).

    A latent policy's ``act`` is one episode: its latent is drawn once, here.
    """
    import torch

    from intersection_meta.networks import sample_actions
    from intersection_meta.rollout import env_actions

    generator = torch.Generator().manual_seed(int(seed))
    draw = getattr(policy, "episode_latents", None)  # a latent policy: one z for the episode (its mean if greedy)
    latent = None if draw is None else draw(params, 1, generator, greedy)

    def act(obs: Any) -> Any:
        with torch.no_grad():
            inputs = torch.as_tensor(np.asarray(obs, np.float32).reshape(1, -1))
            if latent is not None:
                inputs = torch.cat([inputs, latent], dim=1)
            dist = policy.distribution(inputs, params)
            action = env_actions(sample_actions(dist, generator, deterministic=greedy), action_space)[0]
        return int(action) if np.ndim(action) == 0 else action

    return act


def adaptation_labels(adapt_steps: int) -> tuple[str, str]:
    """Labels of the two recorded policies: ``("pre-adaptation", "adapted (K steps)")``."""
    return "pre-adaptation", f"adapted ({adapt_steps} step{'s' if adapt_steps != 1 else ''})"


def record_adaptation(
    checkpoint: Any,
    *,
    task_seed: int,
    task: Task | None = None,
    scenario: Any = None,
    adapt_steps: int = 1,
    episodes: int = 1,
    greedy: bool = True,
    backend: str = "auto",
) -> list[Recording]:
    """Sample a task, adapt a meta-trained policy to it, and record each episode before and after adaptation.

    The adaptation is the evaluator's (:func:`intersection_meta.adaptation.adapt_to_task`: fresh episodes with the
    current parameters, one inner step, repeated ``adapt_steps`` times). Then ``episodes`` episodes are recorded on
    highway-env, each twice from the same reset seed: with the meta-trained parameters and with the adapted ones.
    Seeds derive from ``task_seed`` only, so the same arguments give the same recordings.

    Args:
        checkpoint: A loaded :class:`intersection_meta.checkpoint.Checkpoint`.
        task_seed: Seed of the sampled task, and root of the adaptation and episode seeds.
        task: A given task (e.g. one logged by a run) instead of a sampled one.
        scenario: The scenario to sample from (a ``Scenario``); default: the checkpoint's own.
        adapt_steps: Inner adaptation steps K (0 records the pre-adaptation policy only).
        episodes: Episodes recorded per policy.
        greedy: Act with the most likely action instead of sampling.
        backend: Simulator of the adaptation rollouts (``auto``, ``fast`` or ``highway``); recordings always use
            highway-env.

    Returns:
        ``[episode 0 pre, episode 0 adapted, episode 1 pre, ...]`` (only the pre recordings when ``adapt_steps``
        is 0).
    """
    from intersection_meta.adaptation import adapt_to_task, resolve_backend
    from intersection_meta.envs.factory import make_env
    from intersection_meta.seeding import derive_seed

    if task is None:
        task = (scenario or checkpoint.scenario).sample_tasks(1, seed=task_seed)[0]
    params = adapt_to_task(checkpoint, task, adapt_steps=adapt_steps, seed=derive_seed(task_seed, 1),
                           backend=resolve_backend(backend, task))
    pre_label, adapted_label = adaptation_labels(adapt_steps)
    variants = [(pre_label, params[0])] + ([(adapted_label, params[-1])] if adapt_steps > 0 else [])
    env = make_env(task, render_mode=None if task.kind == "intersection" else "rgb_array")
    recordings = []
    try:
        for episode in range(episodes):
            episode_seed = derive_seed(task_seed, 2, episode)
            for label, variant_params in variants:
                act = policy_act(checkpoint.policy, variant_params, env.action_space, greedy=greedy, seed=episode_seed)
                recordings.append(record_episode(env, act, seed=episode_seed, label=label, task=task, episode=episode))
    finally:
        if task.kind == "intersection":
            # gymnasium's CartPole/LunarLander close() calls pygame.quit(), which would close a viewer's own window:
            # those envs are left to the garbage collector instead.
            env.close()
    return recordings


def adaptation_changes_outcome(recordings: Sequence[Recording]) -> bool:
    """Whether some episode ends differently before and after adaptation (e.g. collided -> arrived)."""
    outcomes: dict[int, set[str]] = {}
    for rec in recordings:
        outcomes.setdefault(rec.episode, set()).add(rec.outcome)
    return any(len(o) > 1 for o in outcomes.values())


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def save_recordings(path: str | Path, recordings: Sequence[Recording]) -> Path:
    """Write recordings to one compressed ``.npz`` (no pickled objects). Returns the path written.

    ``np.savez_compressed`` appends ``.npz`` to a path without that suffix; the returned path is the real one.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "recordings": [r.metadata() for r in recordings]}
    arrays: dict[str, np.ndarray] = {"__meta__": np.asarray([json.dumps(meta)])}
    for i, rec in enumerate(recordings):
        for name in _ARRAY_FIELDS:
            value = np.asarray(getattr(rec, name))
            if value.dtype == object:
                raise ValueError(f"recording {i}: field {name} has dtype object; cannot save without pickle")
            arrays[f"{i}/{name}"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_recordings(path: str | Path) -> list[Recording]:
    """Read recordings written by :func:`save_recordings`.

    Raises:
        RecordingFileError: If the file is missing, not an ``.npz`` archive, corrupt, or of another format
            or version. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingFileError(f"{path}: no such recording file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "__meta__" not in archive.files:
                raise RecordingFileError(f"{path}: not a recording file (no __meta__ entry)")
            meta = json.loads(str(archive["__meta__"][0]))
            if meta.get("format") != FORMAT:
                raise RecordingFileError(f"{path}: not a recording file (format {meta.get('format')!r})")
            if meta.get("version") != FORMAT_VERSION:
                raise RecordingFileError(f"{path}: recording format version {meta.get('version')!r} is not "
                                         f"supported (this code reads version {FORMAT_VERSION})")
            recordings = []
            for i, md in enumerate(meta["recordings"]):
                arrays = {name: archive[f"{i}/{name}"] for name in _ARRAY_FIELDS}
                md = dict(md)
                md["action_names"] = tuple(md["action_names"])
                recording = Recording(**md, **arrays)
                problem = recording_problem(recording)
                if problem:
                    raise RecordingFileError(f"{path}: recording {i} is inconsistent: {problem}")
                recordings.append(recording)
    except RecordingFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, zipfile.BadZipFile) as err:
        detail = shorten(str(err).splitlines()[0] if str(err) else "", 200)
        raise RecordingFileError(f"{path}: corrupt or unreadable recording file ({type(err).__name__}: {detail})") \
            from None
    return recordings


def recording_problem(rec: Recording) -> str | None:
    """What makes a recording's arrays unusable by the viewer (shapes that disagree, non-finite numbers, steps
    without frames), or None. Files are checked with this on load, so crafted sizes give one clear error."""
    n_steps, n_frames = len(rec.rewards), len(rec.frame_step)
    checks = [
        (rec.rewards.ndim == 1 and np.issubdtype(rec.rewards.dtype, np.number), "rewards must be a 1-D number array"),
        (rec.actions.ndim in (1, 2) and len(rec.actions) == n_steps, f"actions must have {n_steps} rows"),
        (rec.frame_step.ndim == 1 and np.issubdtype(rec.frame_step.dtype, np.integer), "frame_step must be 1-D ints"),
        (rec.frame_time_s.shape == (n_frames,), f"frame_time_s must have shape ({n_frames},)"),
        (
            rec.frame_states.ndim == 3 and rec.frame_states.shape[1:] == (2, len(STATE_FIELDS))
            and rec.frame_states.shape[0] in (0, n_frames),
            f"frame_states must have shape ({n_frames} or 0, 2, {len(STATE_FIELDS)})",
        ),
        (
            rec.rgb_frames.ndim == 4 and rec.rgb_frames.shape[3] == 3 and rec.rgb_frames.shape[0] in (0, n_frames)
            and rec.rgb_frames.dtype == np.uint8,
            f"rgb_frames must be uint8 of shape ({n_frames} or 0, H, W, 3)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            return message
    for name in ("rewards", "frame_time_s", "frame_states"):
        values = getattr(rec, name)
        if np.issubdtype(values.dtype, np.number) and not np.isfinite(values).all():
            return f"{name} holds non-finite values"
    if not (math.isfinite(float(rec.frame_rate_hz)) and float(rec.frame_rate_hz) > 0):
        return f"frame_rate_hz must be a positive number, got {abbreviate(rec.frame_rate_hz)}"
    if n_frames and (np.any(np.diff(rec.frame_step) < 0) or rec.frame_step[0] != 0 or rec.frame_step[-1] != n_steps):
        return f"frame_step must rise from 0 to the {n_steps} steps"
    if n_frames and len(np.unique(rec.frame_step)) != n_steps + 1:
        return "every step needs at least one frame"
    return None
