"""The package installed the normal way, into a fresh venv, from a fresh clone (slow: it installs torch).

Run it with ``python -m pytest -m slow tests/test_install.py`` (about 2-3 minutes here). It clones the committed
tree (uncommitted changes are not part of it, as in CI), then:

* ``pip install CLONE`` (a wheel build, not editable) into a new venv, and from a directory outside the clone:
  lists the scenarios, trains yield_left for one iteration, runs ``intersection-meta-replay --help`` and replays the
  shipped policy by name; the clone stays clean and nothing is installed as a top-level ``viz``;
* ``pip install -e CLONE`` into a second new venv: the clone stays clean, and a run records the clone's commit
  without ``-dirty``. (Not the same venv: a run of the installed package writes numba's compiled-kernel cache into
  ``site-packages/intersection_meta/envs/fast/__pycache__``, which ``pip uninstall`` leaves behind, and that stale
  folder would shadow the editable install's ``intersection_meta.envs``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, timeout_s: float = 900) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(SDL_VIDEODRIVER="offscreen", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{' '.join(argv)} (in {cwd}) exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _git_status(clone: Path) -> str:
    return _run(["git", "status", "--porcelain", "--untracked-files=all"], clone)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, clone, a working directory outside the clone) after a non-editable install."""
    root = tmp_path_factory.mktemp("install")
    clone, venv, elsewhere = root / "clone", root / "venv", root / "elsewhere"
    elsewhere.mkdir()
    _run(["git", "clone", "--quiet", str(REPO), str(clone)], root)
    _run([sys.executable, "-m", "venv", str(venv)], root)
    bin_dir = venv / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(clone)], root)
    return bin_dir, clone, elsewhere


def test_non_editable_install_works_from_anywhere(installed):
    bin_dir, clone, elsewhere = installed
    python = str(bin_dir / "python")
    listing = _run([python, "-m", "intersection_meta.scenarios", "list"], elsewhere)
    assert "yield_left" in listing and "cartpole_physics" in listing
    assert "yield_left" in _run([str(bin_dir / "intersection-meta-scenarios"), "list"], elsewhere)

    _run([python, "-m", "intersection_meta.train", "--scenario", "yield_left", "--iterations", "1", "--out", "run",
          "--quiet", "--no-tensorboard"], elsewhere)
    assert (elsewhere / "run" / "checkpoints" / "last.pt").is_file()
    recorded = yaml.safe_load((elsewhere / "run" / "config.yaml").read_text())["git_sha"]
    assert recorded.startswith("unknown (installed intersection_meta "), recorded  # no checkout to name

    assert "--checkpoint" in _run([str(bin_dir / "intersection-meta-replay"), "--help"], elsewhere)
    out = _run([str(bin_dir / "intersection-meta-replay"), "--checkpoint", "yield_left", "--snapshot", "s.png",
                "--step", "3"], elsewhere)
    showcase = yaml.safe_load((REPO / "policies" / "index.yaml").read_text())["yield_left_directed_maml.pt"]["showcase"]
    assert f"[{showcase['task_id']}]" in out and (elsewhere / "s.png").is_file()  # the installed index's showcase

    site = next((bin_dir.parent / "lib").glob("python3*/site-packages"))
    assert (site / "intersection_meta" / "viz" / "replay.py").is_file()
    assert not (site / "viz").exists(), "the viewer must not be installed as a top-level `viz` package"
    assert _git_status(clone) == "", "pip install . left files git does not ignore"


def test_editable_install_keeps_the_clone_clean(installed, tmp_path):
    _, clone, elsewhere = installed
    _run([sys.executable, "-m", "venv", str(tmp_path / "venv")], tmp_path)
    bin_dir = tmp_path / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-e", str(clone)], elsewhere)
    assert _git_status(clone) == ""
    assert "--checkpoint" in _run([str(bin_dir / "intersection-meta-replay"), "--help"], elsewhere)
    _run([str(bin_dir / "python"), "-m", "intersection_meta.train", "--scenario", "yield_left", "--iterations", "1",
          "--out", "run_editable", "--quiet", "--no-tensorboard", "--no-eval"], elsewhere)
    head = _run(["git", "rev-parse", "HEAD"], clone).strip()
    assert yaml.safe_load((elsewhere / "run_editable" / "config.yaml").read_text())["git_sha"] == head
    assert _git_status(clone) == ""
