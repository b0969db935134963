"""Benchmark runner: train (or resume, or skip) every (algorithm, seed) run in its own worker process, on this
machine (:class:`LocalExecutor`) or as Ray tasks (:class:`RayExecutor`); the run directories, and so
``results.csv`` and the report, do not depend on the executor."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from intersection_meta.config import FLAT_KEYS, PRE_KEY_BEHAVIOUR, SECTIONS, RunConfig, make_config
from intersection_meta.schema import LoadError


class BenchError(ValueError):
    """The benchmark cannot run as requested (bad arguments, a run directory from a different config)."""


@dataclass(frozen=True)
class RunSpec:
    """One (algorithm, seed) run of the benchmark, as sent to a worker process."""

    algo: str
    seed: int
    out_dir: Path
    config: dict[str, Any]
    scenario_sets: tuple[tuple[str, Any], ...]
    #: Shown before the algorithm in progress lines when one pool runs several suites (the scenario matrix).
    label: str = ""
    #: numba threads of the run's simulator (its torch uses 1): :class:`LocalExecutor` gives each run its share
    #: of the cores, so parallel runs do not oversubscribe them; a Ray task asks for 1 CPU and uses 1.
    numba_threads: int = 1


@dataclass(frozen=True)
class RunOutcome:
    algo: str
    seed: int
    status: str  # "done" | "resumed" | "skipped" | "failed"
    iterations: int = 0
    wall_time_s: float = float("nan")
    final_return_post: float = float("nan")
    error: str = ""
    elapsed_s: float = 0.0
    label: str = ""


def run_dir_name(algo: str, seed: int) -> str:
    return f"{algo}__s{seed}"


def _flat_known(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a stored config (sections, or the flat names of older runs): every key of
    the current config, the behaviour before the key existed where ``values`` lacks it (:data:`PRE_KEY_BEHAVIOUR`,
    else its default); keys the config no longer has are dropped."""
    out = {**RunConfig().flat(), **PRE_KEY_BEHAVIOUR}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            items = [(f"{FLAT_KEYS.get(key)}.{key}", value)]
        for dotted, v in items:
            if dotted in out:
                out[dotted] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Run-config keys (``section.key``, except ``train.iterations``) whose stored value differs from the
    requested one.

    A key missing from ``stored`` (a run saved before the key existed) counts as the behaviour it had then, and
    stored keys the config no longer has are ignored, so adding a field, or changing a default later, does not
    invalidate finished runs.
    """
    a, b = _flat_known(stored), _flat_known(requested)
    return sorted(k for k in a if k != "train.iterations" and a[k] != b[k])


def load_runs(
    out: Path, algos: Sequence[str], seeds: Sequence[int], iterations: int | None = None
) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Metrics rows of every run present under ``out/runs`` (partial runs included; missing ones omitted).

    Rows after ``iterations`` (a run trained longer earlier) are dropped so every run is compared alike.
    """
    from intersection_meta.trainer import read_metrics

    runs = {}
    for algo in algos:
        for seed in seeds:
            path = out / "runs" / run_dir_name(algo, seed) / "metrics.csv"
            if path.exists():
                rows = [r for r in read_metrics(path) if iterations is None or r["iteration"] <= iterations]
                if rows:
                    runs[(algo, seed)] = rows
    return runs


def _set_numba_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def run_one(spec: RunSpec) -> RunOutcome:
    """Train (or resume, or skip) one run; executed in a worker process. Never raises for run errors."""
    import torch

    torch.set_num_threads(1)
    _set_numba_threads(spec.numba_threads)
    from intersection_meta.checkpoint import CheckpointError, load_raw
    from intersection_meta.bench.report import final_return
    from intersection_meta.evaluate import final_evaluation
    from intersection_meta.scenario import load_scenario
    from intersection_meta.trainer import TrainError, read_metrics, train

    t0 = time.perf_counter()
    config = make_config(spec.config, source="bench")
    last = spec.out_dir / "checkpoints" / "last.pt"
    try:
        scenario = load_scenario(config.train.scenario, list(spec.scenario_sets))
        if last.exists():
            raw = load_raw(last)
            if raw["scenario"] != scenario.to_dict():
                raise BenchError(
                    f"{spec.out_dir} holds a run of a different scenario (other --set overrides?); "
                    "use another --out or delete it"
                )
            diff = config_differences(raw["config"], config.to_dict())
            if diff:
                raise BenchError(
                    f"{spec.out_dir} holds a run with a different config (keys {', '.join(diff)}); "
                    "use another --out or delete it"
                )
            if int(raw["iteration"]) >= config.train.iterations:
                status = "skipped"
            else:
                # stop_after: a run stored with more iterations must still stop at this benchmark's count
                todo = config.train.iterations - int(raw["iteration"])
                train(config, spec.out_dir, resume=True, progress=False, tensorboard=False, stop_after=todo)
                status = "resumed"
        else:
            train(config, spec.out_dir, progress=False, tensorboard=False, scenario=scenario)
            status = "done"
        rows = read_metrics(spec.out_dir / "metrics.csv")
        # the final held-out evaluation, as python -m intersection_meta.train runs it (train.eval_tasks: 0 skips
        # it); redone when the run trained further, kept when the run was already complete
        if config.train.eval_tasks > 0 and (status != "skipped" or not (spec.out_dir / "evaluation.json").exists()):
            final_evaluation(config, last, spec.out_dir)
    except (
        BenchError,
        LoadError,
        TrainError,
        CheckpointError,
        OSError,
        RuntimeError,
    ) as exc:
        return RunOutcome(
            spec.algo,
            spec.seed,
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            elapsed_s=time.perf_counter() - t0,
            label=spec.label,
        )
    return RunOutcome(
        spec.algo,
        spec.seed,
        status,
        iterations=int(rows[-1]["iteration"]) if rows else 0,
        wall_time_s=rows[-1]["wall_time_s"] if rows else float("nan"),
        final_return_post=final_return(rows),
        elapsed_s=time.perf_counter() - t0,
        label=spec.label,
    )


class LocalExecutor:
    """Runs in ``jobs`` fresh worker processes on this machine (one process per run, so peak memory is per run).

    A worker that dies abruptly (killed, out of memory) breaks its process pool: every run still pending there
    fails with ``BrokenProcessPool``. Those runs go to a fresh pool, up to ``max_retries`` times each; a retried
    run resumes from its last checkpoint, as the Ray executor's retries do.
    """

    def __init__(self, jobs: int, *, max_retries: int = 3) -> None:
        self.jobs = max(1, int(jobs))
        self.max_retries = max(0, int(max_retries))

    @property
    def parallel_runs(self) -> int:
        return self.jobs

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """The outcome of every spec, as the runs finish."""
        # forkserver: each run starts from a clean single-threaded process (plain fork after torch use is
        # unsafe). No preload: runs forked from a server that had imported the trainer (torch, numba) trained 3-5x
        # slower when two ran at once (15-iteration cross_straight runs: 12 s each against 2-3 s), which cost more
        # than the imports it saved.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        threads = max(1, (os.cpu_count() or 1) // min(self.jobs, max(1, len(specs))))
        pending, attempt = [replace(spec, numba_threads=threads) for spec in specs], 0
        while pending:
            broken: list[RunSpec] = []
            with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
                futures = {pool.submit(run_one, spec): spec for spec in pending}
                for future in as_completed(futures):
                    spec = futures[future]
                    try:
                        yield future.result()
                    except BrokenProcessPool as exc:  # a worker died: this run and the pool's other runs
                        if attempt < self.max_retries:
                            broken.append(spec)
                        else:
                            yield _failed(spec, exc)
                    except Exception as exc:  # any other crash of a worker must not lose the other runs
                        yield _failed(spec, exc)
            pending, attempt = broken, attempt + 1


def _failed(spec: RunSpec, exc: BaseException) -> RunOutcome:
    return RunOutcome(spec.algo, spec.seed, "failed", error=f"{type(exc).__name__}: {exc}", label=spec.label)


class RayExecutor:
    """Runs each run as a Ray task asking for ``cpus_per_run`` CPUs, in a fresh worker process per run.

    A run whose worker dies, or that raises an unexpected exception, is retried up to ``max_retries`` times; the
    retry resumes from the run's last checkpoint (``run_one`` resumes a partial run). Call
    ``distributed.connect`` first.
    """

    def __init__(self, *, cpus_per_run: float = 1.0, max_retries: int = 3, poll_s: float = 60.0) -> None:
        from intersection_meta.distributed import import_ray

        self.ray = import_ray()
        self.cpus_per_run, self.max_retries, self.poll_s = float(cpus_per_run), int(max_retries), float(poll_s)

    @property
    def parallel_runs(self) -> int:
        """Runs the cluster can hold at once (its CPUs over the CPUs per run)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 0) // self.cpus_per_run))

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        ray = self.ray
        largest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if largest < self.cpus_per_run:
            raise BenchError(f"--ray: each run asks for {self.cpus_per_run:g} CPUs; the largest node has {largest:g}")
        task = ray.remote(
            num_cpus=self.cpus_per_run, max_retries=self.max_retries, retry_exceptions=True, max_calls=1
        )(run_one)
        pending = {task.remote(spec): spec for spec in specs}
        while pending:
            # the poll keeps the driver responsive (Ctrl-C); a run itself may take hours, so no overall limit
            done, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except (ray.exceptions.RayError, OSError) as exc:  # retries exhausted
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    yield RunOutcome(
                        spec.algo, spec.seed, "failed", error=f"{type(exc).__name__}: {first}", label=spec.label
                    )


def run_all(specs: Sequence[RunSpec], executor: LocalExecutor | RayExecutor, log: Any = None) -> list[RunOutcome]:
    """Run ``specs`` on ``executor``, printing one line per finished run with a running count to ``log``
    (default: ``sys.stderr``)."""
    log = sys.stderr if log is None else log
    outcomes: list[RunOutcome] = []
    total = len(specs)
    for outcome in executor.run(specs):
        outcomes.append(outcome)
        if outcome.status == "failed":
            detail = outcome.error
        else:
            detail = (
                f"{outcome.iterations} it, train time {outcome.wall_time_s:.0f} s, "
                f"final return_post {outcome.final_return_post:.1f}"
            )
        print(
            f"[{len(outcomes)}/{total}] {outcome.label + ' ' if outcome.label else ''}{outcome.algo} seed "
            f"{outcome.seed}: {outcome.status} "
            f"({detail}; {outcome.elapsed_s:.0f} s here)",
            file=log,
            flush=True,
        )
    return outcomes
