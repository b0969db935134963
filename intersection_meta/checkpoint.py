"""Checkpoints: one versioned ``.pt`` file with everything to rebuild the policy and continue the run.

Contents (all loadable with ``torch.load(weights_only=True)``: tensors, dicts, lists, strings, numbers)::

    format_version   int, FORMAT_VERSION
    algo             str
    iteration        int, meta-iterations completed
    policy_state     the policy's state_dict (meta-trained initial parameters; with policy.input_norm: fitted also
                     the input statistics input_norm.mean / input_norm.std)
    meta_state       learner state (e.g. Meta-SGD per-parameter step sizes) as a dict of tensors
    optimizer_state  outer optimiser state_dict
    config           the resolved RunConfig as a dict of sections (checkpoints written before the sections hold a
                     flat dict of the same key names; make_config reads both)
    scenario         the resolved scenario as a dict (Scenario.to_dict(); rebuilds the task distribution)
    spaces           {"obs_dim": int, "action": {"type": "discrete", "n": int} | {"type": "box", "dim": int,
                      "low": [...], "high": [...]}}
    git_sha          str, the commit of the code that wrote it (``git_sha()``; "unknown ..." outside a git checkout)
    extra            dict, free-form (e.g. elapsed wall time, env steps)

Files are written atomically (temporary file in the same directory, fsync, ``os.replace``), so a run killed
mid-write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from intersection_meta.config import RunConfig, stored_config
from intersection_meta.resources import resolve_checkpoint
from intersection_meta.scenario import Scenario
from intersection_meta.schema import abbreviate, shorten

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of an unsupported version, or does not match the request."""


def git_sha(repo_dir: Path | None = None) -> str:
    """The commit of the running code (with ``-dirty`` if tracked files changed), when it runs from a git checkout.

    An installed copy (a wheel in site-packages) is not a checkout, even when the venv sits inside one, so it
    records ``"unknown (installed intersection_meta VERSION)"``; without git at all, ``"unknown"``.
    """
    cwd = (repo_dir or Path(__file__).resolve().parent.parent).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not top or Path(top).resolve() != cwd:
            return _installed_version()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"unknown (installed intersection_meta {version('intersection_meta')})"
    except PackageNotFoundError:
        return "unknown"


def spaces_to_dict(obs_space: gym.Space, act_space: gym.Space) -> dict[str, Any]:
    obs_dim = int(torch.tensor(obs_space.shape).prod())
    if isinstance(act_space, gym.spaces.Discrete):
        action = {"type": "discrete", "n": int(act_space.n)}
    else:
        action = {
            "type": "box",
            "dim": int(act_space.shape[0]),
            "low": [float(x) for x in act_space.low],
            "high": [float(x) for x in act_space.high],
        }
    return {"obs_dim": obs_dim, "action": action}


def spaces_from_dict(d: dict[str, Any]) -> tuple[gym.Space, gym.Space]:
    import numpy as np

    obs = gym.spaces.Box(-np.inf, np.inf, shape=(int(d["obs_dim"]),), dtype=np.float32)
    a = d["action"]
    if a["type"] == "discrete":
        return obs, gym.spaces.Discrete(int(a["n"]))
    return obs, gym.spaces.Box(np.array(a["low"], dtype=np.float32), np.array(a["high"], dtype=np.float32))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (with ``format_version`` added) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are ordinary shareable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory a checkpoint belongs to: ``RUN`` for ``RUN/checkpoints/NAME.pt`` or for ``RUN`` itself;
    None for a file outside a run directory (e.g. a shipped policy)."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else None


_REQUIRED = ("algo", "iteration", "policy_state", "meta_state", "config", "scenario", "spaces")


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file. Raises :class:`CheckpointError` with the file name on any problem."""
    try:
        path = resolve_checkpoint(path)  # a shipped policy may be named: yield_left, policies:NAME
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        path = candidate if candidate.exists() else path / "last.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files (pickle, zip, runtime, an empty file)
        detail = shorten(str(exc).splitlines()[0], 200) if str(exc).strip() else "empty or truncated file"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {detail})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path}: not an intersection_meta checkpoint (no format_version)")
    version = data["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is not supported; this version of "
            f"intersection_meta reads format_version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {missing}")
    problem = contents_problem(data)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    data["path"] = str(path)
    return data


#: Largest observation or action size a checkpoint may declare (the shipped tasks have at most 16).
MAX_SPACE_SIZE = 100_000


def contents_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's contents (crafted sizes, non-tensor or non-finite weights), or None."""
    spaces = data["spaces"]
    try:
        sizes = [int(spaces["obs_dim"])]
        action = spaces["action"]
        if action["type"] == "discrete":
            sizes.append(int(action["n"]))
        elif action["type"] == "box":
            sizes.append(int(action["dim"]))
            if not len(action["low"]) == len(action["high"]) == sizes[-1]:
                return "spaces: action low/high do not match action dim"
        else:
            return f"spaces: unknown action type {abbreviate(action['type'])}"
    except (KeyError, TypeError, ValueError):
        return "spaces: expected {obs_dim: int, action: {type: discrete, n: int} | {type: box, dim, low, high}}"
    if not all(1 <= n <= MAX_SPACE_SIZE for n in sizes):
        return f"spaces: sizes {sizes} outside [1, {MAX_SPACE_SIZE}]"
    tensors = {"policy_state": data["policy_state"]}
    meta = data["meta_state"] or {}
    if isinstance(meta, dict) and isinstance(meta.get("step_sizes"), dict):
        tensors["meta_state.step_sizes"] = meta["step_sizes"]
    for where, state in tensors.items():
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            return f"{where}: expected a mapping of tensors"
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            return f"{where}: non-finite weights in {', '.join(map(str, bad[:3]))}"
    return None


@dataclass
class Checkpoint:
    """A loaded checkpoint with its policy and learner rebuilt (no class needs to be passed in)."""

    path: str
    algo: str
    iteration: int
    config: RunConfig
    scenario: Scenario
    policy: Any  # networks.CategoricalMLP | networks.GaussianMLP
    learner: Any  # meta learner (holds e.g. Meta-SGD step sizes)
    raw: dict[str, Any]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.policy.named_parameters()}


def load_checkpoint(path: str | Path, *, scenario: str | None = None) -> Checkpoint:
    """Load a checkpoint and rebuild its policy, learner, config and scenario.

    Args:
        path: A ``.pt`` file or a run directory (uses ``checkpoints/last.pt``).
        scenario: If given, the checkpoint's scenario must have this name (or the file at this path must have it).

    Raises:
        CheckpointError: missing/corrupt file, unsupported version, or a scenario mismatch.
    """
    from intersection_meta.meta import MetaLearner
    from intersection_meta.networks import build_policy

    raw = load_raw(path)
    config = stored_config(raw["config"], source=f"{raw['path']} (config)")
    sc = Scenario.from_dict(raw["scenario"], source=f"{raw['path']} (scenario)")
    if scenario is not None:
        from intersection_meta.scenario import load_scenario

        wanted = load_scenario(scenario).name
        if wanted != sc.name:
            raise CheckpointError(
                f"{raw['path']}: checkpoint was trained on scenario '{sc.name}', not '{wanted}'; "
                f"pass --scenario {sc.name} or a checkpoint trained on '{wanted}'"
            )
    obs_space, act_space = spaces_from_dict(raw["spaces"])
    policy = build_policy(
        obs_space,
        act_space,
        hidden_sizes=config.policy.hidden_sizes,
        input_norm=config.policy.input_norm,
        latent_dim=config.policy.latent_dim,
    )
    try:
        policy.load_state_dict(raw["policy_state"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{raw['path']}: policy weights do not match the stored config: {str(exc).splitlines()[0]}"
        ) from None
    learner = MetaLearner(policy, config.meta, config.pg)
    if raw["meta_state"]:
        try:
            learner.load_state_dict(raw["meta_state"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{raw['path']}: learner state does not match the stored config ({type(exc).__name__})"
            ) from None
    return Checkpoint(
        path=raw["path"],
        algo=raw["algo"],
        iteration=int(raw["iteration"]),
        config=config,
        scenario=sc,
        policy=policy,
        learner=learner,
        raw=raw,
    )
