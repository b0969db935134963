"""What Ray rollout actors buy (or cost) per meta-iteration: in process vs 1 and 2 Ray actors.

Run: ``python benchmarks/ray_scaling.py [--iterations 4] [--repeats 2] [--cases highway,lunarlander,fast]``. For each case it
trains the same run in process and with ``RaySampler(1)`` and ``RaySampler(2)`` on a local Ray instance
(2 CPUs, loopback, no dashboard), checks the metrics are identical, and prints the mean sampling time and
iteration time per iteration (the first iteration, which starts the actors, is left out) and the ratios. The three
set-ups run ``--repeats`` times, in alternating order after an uncounted warm-up, and their times are averaged,
so a drift in load hits all three alike. ``RAY_worker_niceness=0`` runs the actors at the driver's priority
(Ray's default, 15, starves them on a machine shared with other jobs).
The machine's load average is printed beside them: on a shared 2-core machine absolute times are noisy, the
ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from intersection_meta.config import make_config
from intersection_meta.distributed import RaySampler, connect
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import TIMING_COLUMNS, train

#: case -> (run-config values, scenario overrides). Small meta-batches: the reference simulators are slow.
CASES: dict[str, tuple[dict, list[str]]] = {
    "highway": (
        {"train.scenario": "yield_left", "env.backend": "highway", "train.meta_batch_size": 4,
         "train.episodes_per_task": 4},
        [],
    ),
    "lunarlander": (
        {"train.scenario": "lunarlander_gravity_wind", "env.backend": "highway", "train.meta_batch_size": 4,
         "train.episodes_per_task": 4},
        [],
    ),
    # the fast backend at the default meta-batch (20 tasks x 20 episodes)
    "fast": ({"train.scenario": "yield_left", "env.backend": "fast"}, []),
}  # fmt: skip


#: In process (None), then 1 and 2 Ray actors.
SETUPS: tuple[int | None, ...] = (None, 1, 2)


def measure(case: str, iterations: int, workers: int | None, out: Path) -> dict:
    """One training of ``case`` in process (``workers`` None) or on ``workers`` Ray actors: its mean times."""
    values, sets = CASES[case]
    config = make_config({**values, "meta.algo": "maml", "train.iterations": iterations, "train.eval_tasks": 0})
    sampler = None if workers is None else RaySampler(workers, fast_backend_ok=True)
    load = os.getloadavg()[0]
    try:
        result = train(
            config,
            Path(tempfile.mkdtemp(dir=out)),
            progress=False,
            tensorboard=False,
            scenario=load_scenario(values["train.scenario"], sets),
            sampler=sampler,
        )
    finally:
        if sampler is not None:
            sampler.close()
    rows = result.metrics[1:]  # iteration 1 starts the actors
    return {
        "case": case,
        "workers": workers or 0,
        "sampling_s": statistics.mean(r["time_sampling_s"] for r in rows),
        "iteration_s": statistics.mean(r["time_iteration_s"] for r in rows),
        "env_steps_per_iteration": (rows[-1]["env_steps"] - result.metrics[0]["env_steps"]) / len(rows),
        "load": (load + os.getloadavg()[0]) / 2,
        "metrics": [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in result.metrics],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    torch.set_num_threads(1)
    connect(None, num_cpus=2)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            measure(case, 2, None, Path(tmp))  # warm-up (imports, first env construction), not counted
            trials = []
            for repeat in range(args.repeats):  # the order alternates, so drifts in load hit every set-up alike
                order = SETUPS if repeat % 2 == 0 else SETUPS[::-1]
                times = {w: measure(case, args.iterations, w, Path(tmp)) for w in order}
                trials.append([times[w] for w in SETUPS])
            same = all(json.dumps(r["metrics"]) == json.dumps(trials[0][0]["metrics"]) for t in trials for r in t)
            runs = [
                {**setup[0], **{k: statistics.mean(r[k] for r in setup) for k in ("sampling_s", "iteration_s", "load")}}
                for setup in zip(*trials, strict=True)
            ]
            base, one, two = runs
            for r in runs:
                r.pop("metrics")
                figures.append(r)
                who = "in process" if not r["workers"] else f"{r['workers']} Ray actor(s)"
                print(
                    f"{case:12s} {who:18s} sampling {r['sampling_s']:7.3f} s/it  iteration {r['iteration_s']:7.3f} "
                    f"s/it  ({r['env_steps_per_iteration']:.0f} env steps/it, load {r['load']:.1f})",
                    flush=True,
                )
            print(
                f"{case:12s} speed-up 1 -> 2 actors (sampling): {one['sampling_s'] / two['sampling_s']:.2f}x; "
                f"Ray overhead vs in process: 1 actor {one['iteration_s'] - base['iteration_s']:+.3f} s/it "
                f"({one['iteration_s'] / base['iteration_s']:.2f}x), 2 actors "
                f"{two['iteration_s'] - base['iteration_s']:+.3f} s/it ({two['iteration_s'] / base['iteration_s']:.2f}x)"
                f"; metrics identical: {same}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
