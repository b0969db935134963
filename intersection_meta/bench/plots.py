"""Benchmark plots: post-adaptation return against iteration and against wall time, mean and 95% band."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from intersection_meta.bench.report import band_over_seeds, interpolate
from intersection_meta.stats import mean_ci

_COLORS = {"maml": "tab:blue", "fomaml": "tab:orange", "meta_sgd": "tab:green"}


def _style(algo: str) -> dict[str, Any]:
    base = algo.removeprefix("directed_")
    return {"color": _COLORS.get(base, None), "linestyle": "-" if algo.startswith("directed_") else "--"}


def plot_curves(
    report_dir: Path,
    runs: dict[tuple[str, int], list[dict[str, float]]],
    algos: Sequence[str],
    target: float | None,
    title: str,
    smooth: int = 3,
) -> list[Path]:
    """Write ``return_vs_iteration.png`` and ``return_vs_wall_time.png`` (mean ± 95% CI band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis in ("iteration", "wall_time"):
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
        for algo in algos:
            seed_rows = [rows for (a, _), rows in sorted(runs.items()) if a == algo]
            if not seed_rows:
                continue
            if axis == "iteration":
                curves = [[r["return_post"] for r in rows] for rows in seed_rows]
                means, halves, counts = band_over_seeds(curves)
                xs = list(range(1, len(means) + 1))
            else:
                end = max(rows[-1]["wall_time_s"] for rows in seed_rows)
                xs = [end * i / 200 for i in range(201)]
                curves = [
                    interpolate([r["wall_time_s"] for r in rows], [r["return_post"] for r in rows], xs, hold_last=True)
                    for rows in seed_rows
                ]
                means, halves, counts = [], [], []
                for i in range(len(xs)):
                    ci = mean_ci([c[i] for c in curves])
                    means.append(ci.estimate)
                    halves.append(ci.half_width)
                    counts.append(sum(not math.isnan(c[i]) for c in curves))
            keep = [i for i, n in enumerate(counts) if n >= max(1, (len(seed_rows) + 1) // 2)]
            x = [xs[i] for i in keep]
            m = [means[i] for i in keep]
            h = [0.0 if math.isnan(halves[i]) else halves[i] for i in keep]
            ax.plot(x, m, label=f"{algo} (n={len(seed_rows)})", linewidth=1.6, **_style(algo))
            ax.fill_between(
                x,
                [a - b for a, b in zip(m, h, strict=True)],
                [a + b for a, b in zip(m, h, strict=True)],
                color=_style(algo)["color"],
                alpha=0.15,
                linewidth=0,
            )
        if target is not None:
            ax.axhline(target, color="black", linewidth=0.8, linestyle=":", label=f"target {target:g}")
        ax.set_xlabel("meta-iteration" if axis == "iteration" else "training wall time per run [s]")
        ax.set_ylabel("post-adaptation return")
        ax.set_title(f"{title}: mean and 95% CI over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = report_dir / f"return_vs_{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
