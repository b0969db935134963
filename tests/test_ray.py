"""Ray (issue 11), against a local Ray instance started here (2 CPUs, loopback only, no dashboard).

Slow (about 3 minutes): run with ``pip install -e '.[test,ray]' && python -m pytest -m slow tests/test_ray.py``.
Without Ray these tests fail with the install command; they are never skipped.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
from pathlib import Path

import pytest

from intersection_meta.cli import bench
from intersection_meta.cli import train as train_cli
from intersection_meta.config import make_config, scenario_defaults
from intersection_meta.distributed import RayError, RaySampler
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import TIMING_COLUMNS, read_metrics, train

pytestmark = pytest.mark.slow

#: A highway-env (reference backend) training small enough for a test: 3 tasks x 2 episodes of 4 decisions.
HIGHWAY = {
    "train.scenario": "yield_left",
    "meta.algo": "directed_maml",
    "env.backend": "highway",
    "train.iterations": 3,
    "train.meta_batch_size": 3,
    "train.episodes_per_task": 2,
    "train.directed_episodes": 3,
    "train.eval_tasks": 0,
    "policy.hidden_sizes": [8],
}
HIGHWAY_SCENARIO_SETS = ["episode.duration_s=4"]
#: Timing columns of results.csv (they differ between any two runs).
RESULT_TIMING = frozenset({"wall_time_s", "peak_rss_mb", "time_iteration_s"})


@pytest.fixture(scope="module")
def ray_instance():
    try:
        import ray
    except ImportError:
        pytest.fail("Ray is not installed; the Ray tests need: pip install -e '.[test,ray]'")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=128 * 2**20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def _without_timing(rows: list[dict], timing: frozenset[str]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in timing} for row in rows]


def _results(bench_dir: Path) -> list[dict]:
    """The rows of a benchmark's results.csv, timing columns aside."""
    with (bench_dir / "results.csv").open(newline="") as fh:
        return _without_timing(list(csv.DictReader(fh)), RESULT_TIMING)


def _same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    """Equal metrics rows, timing columns aside (NaN equals NaN)."""
    def norm(rows):
        return [{k: ("nan" if v != v else v) for k, v in row.items()} for row in _without_timing(rows, TIMING_COLUMNS)]

    return norm(a) == norm(b)


@pytest.fixture(scope="module")
def in_process_metrics(tmp_path_factory) -> list[dict[str, float]]:
    out = tmp_path_factory.mktemp("local") / "run"
    scenario = load_scenario("yield_left", HIGHWAY_SCENARIO_SETS)
    # The train command's config: the scenario's run_defaults under the test's keys.
    config = make_config(HIGHWAY, base=scenario_defaults(scenario))
    train(config, out, progress=False, tensorboard=False, scenario=scenario)
    return read_metrics(out / "metrics.csv")


def test_sweep_gives_the_same_results_with_ray(tmp_path: Path, ray_instance, capsys):
    sweep = [
        "--suite", "cartpole_physics", "--algos", "maml,directed_maml", "--seeds", "2", "--iterations", "2",
        "--set", "episode.max_steps=20", "--set", "meta_batch_size=2", "--set", "episodes_per_task=2",
        "--set", "directed_episodes=2", "--set", "eval_tasks=0", "--set", "hidden_sizes=[8]",
    ]  # fmt: skip
    assert bench.main([*sweep, "--jobs", "2", "--out", str(tmp_path / "local")]) == 0
    assert bench.main([*sweep, "--ray", "--out", str(tmp_path / "ray")]) == 0
    err = capsys.readouterr().err
    assert "on Ray (2 CPUs)" in err and "[4/4]" in err

    local = _results(tmp_path / "local")
    assert len(local) == 2 * 2 * 2 and local == _results(tmp_path / "ray")

    # resume and skip behave as with local processes
    assert bench.main([*sweep, "--ray", "--out", str(tmp_path / "ray")]) == 0
    assert capsys.readouterr().err.count(": skipped (") == 4


def test_highway_training_on_two_actors_matches_in_process(tmp_path: Path, ray_instance, in_process_metrics):
    out = tmp_path / "ray"
    argv = ["--no-eval", "--no-tensorboard", "--quiet", "--out", str(out), "--ray", "--set", "ray_workers=2"]
    argv += [f"--set={k}={v}" for k, v in HIGHWAY.items()] + [f"--set={s}" for s in HIGHWAY_SCENARIO_SETS]
    assert train_cli.main(argv) == 0
    assert _same_rows(read_metrics(out / "metrics.csv"), in_process_metrics)


def test_a_killed_actor_is_replaced_and_the_run_matches(tmp_path: Path, ray_instance, in_process_metrics):
    sampler = RaySampler(2, timeout_s=120)
    killed: list[int] = []

    def kill_soon(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def after_iteration(row: dict[str, float]) -> None:
        if row["iteration"] == 1:  # kill actor 1 while iteration 2 is collecting its episodes
            threading.Timer(0.3, kill_soon, args=(sampler.pids()[1],)).start()

    try:
        scenario = load_scenario("yield_left", HIGHWAY_SCENARIO_SETS)
        result = train(
            make_config(HIGHWAY, base=scenario_defaults(scenario)),
            tmp_path / "run",
            progress=False,
            tensorboard=False,
            scenario=scenario,
            sampler=sampler,
            on_iteration=after_iteration,
        )
        new_pids = sampler.pids()
    finally:
        sampler.close()
    assert killed and killed[0] not in new_pids  # the actor was replaced
    assert len(result.metrics) == 3 and _same_rows(result.metrics, in_process_metrics)


def test_fast_backend_and_impossible_requests_are_clear_errors(tmp_path: Path, ray_instance, capsys):
    argv = ["--scenario", "yield_left", "--iterations", "1", "--set", "eval_tasks=0", "--quiet", "--no-tensorboard"]
    assert train_cli.main([*argv, "--out", str(tmp_path / "a"), "--ray"]) == 2
    assert "--ray does not run the fast backend" in capsys.readouterr().err

    sampler = RaySampler(3)  # the instance has 2 CPUs
    tasks = load_scenario("cartpole_physics").sample_tasks(3, seed=0)
    batch = sampler.open(tasks, make_config({}).env)
    from intersection_meta.networks import build_policy
    from intersection_meta.envs.factory import observation_and_action_spaces

    policy = build_policy(*observation_and_action_spaces(tasks[0]), hidden_sizes=(4,))
    with pytest.raises(RayError, match="ray_workers=3 actors need 1 CPU each; the Ray cluster has 2"):
        batch.collect(policy, seed=0)


def _descendants_named(title: str) -> list[int]:
    """Pids of this process's descendants whose command line starts with ``title`` (Ray's worker titles)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                names[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, name in names.items() if name.startswith(title) and ours(pid)]


def test_a_sweep_run_whose_worker_dies_is_retried_and_resumed(tmp_path: Path, ray_instance, capsys):
    sweep = [
        "--suite", "cartpole_physics", "--algos", "fomaml", "--seeds", "1", "--iterations", "6",
        "--set", "meta_batch_size=2", "--set", "episodes_per_task=4", "--set", "eval_tasks=0",
        "--set", "hidden_sizes=[8]",
    ]  # fmt: skip
    assert bench.main([*sweep, "--jobs", "1", "--out", str(tmp_path / "local")]) == 0
    metrics = tmp_path / "ray" / "runs" / "fomaml__s0" / "metrics.csv"
    killed: list[int] = []

    def kill_mid_run() -> None:
        for _ in range(600):
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # 2 iterations done
                pids = _descendants_named("ray::run_one")
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            threading.Event().wait(0.05)

    killer = threading.Thread(target=kill_mid_run)
    killer.start()
    assert bench.main([*sweep, "--ray", "--out", str(tmp_path / "ray")]) == 0
    killer.join()
    assert killed, "the sweep finished before its worker could be killed"
    assert "[1/1] fomaml seed 0: resumed" in capsys.readouterr().err  # the retry resumed the checkpointed run
    local = _results(tmp_path / "local")
    assert len(local) == 6 and local == _results(tmp_path / "ray")
