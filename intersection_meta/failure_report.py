"""Where the policy fails: evaluation outcomes by sampled parameter (``evaluate --report DIR``).

From an evaluation report (:func:`intersection_meta.evaluate.evaluate_checkpoint`: the held-out tasks and, per
task, the outcomes after the last adaptation step) this writes:

- ``report.md``: a summary that names the parameter bin where collisions (and failures to arrive) concentrate, a
  table per sampled parameter (tasks, success and collision rate with 95% Wilson intervals over episodes, mean
  return, and the mean of any other per-task metric the evaluation carries, e.g. a criticality metric), and the
  worst tasks with the command that replays each;
- ``overview.png`` and one ``param_<key>.png`` per parameter: the histogram of the sampled values with the success
  and collision rate per bin;
- ``pairs.png`` (with two or more numeric parameters): every task in the plane of each pair of numeric parameters,
  coloured by its collision rate, so a failure region that needs two parameters to describe shows too;
- ``tasks.csv``: one row per task (its sampled values and outcomes).

Numeric parameters are binned over their whole sampled range (``bins`` equal bins); choices get one bin per option.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intersection_meta.stats import wilson_interval
from intersection_meta.tasks import task_from_dict

#: Per-task entries of an evaluation report that are not extra metrics.
_BASE_FIELDS = ("task_id", "task", "return_mean", "success_rate", "collision_rate")


@dataclass(frozen=True)
class Bin:
    """One bin of one parameter: its label, the tasks in it and their outcomes."""

    label: str
    n_tasks: int
    episodes: int
    successes: int
    collisions: int
    return_mean: float
    #: Mean of each extra per-task metric over the bin's tasks (NaN-free tasks only).
    extra_means: Mapping[str, float]

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan

    @property
    def collision_rate(self) -> float:
        return self.collisions / self.episodes if self.episodes else math.nan


def bin_edges(param: Any, bins: int) -> np.ndarray | None:
    """Equal-width edges over a numeric parameter's support (a range or a clipped normal), or None for choices and
    fixed values (which get one bin per value)."""
    values = param.values()
    if len(values) == 2 and all(isinstance(v, float) for v in values) and not hasattr(param, "options"):
        return np.linspace(values[0], values[1], bins + 1)
    return None


def bin_rows(values: Sequence[Any], entries: Sequence[Mapping[str, Any]], episodes: int, edges: np.ndarray | None,
             extra: Sequence[str]) -> list[Bin]:
    """Group tasks (``values[i]`` is task i's value of the parameter, ``entries[i]`` its outcomes) into bins."""
    if edges is not None:
        index = np.clip(np.searchsorted(edges, np.asarray(values, dtype=float), side="right") - 1, 0, len(edges) - 2)
        labels = [f"[{edges[b]:.3g}, {edges[b + 1]:.3g}{']' if b == len(edges) - 2 else ')'}"
                  for b in range(len(edges) - 1)]
    else:
        options = list(dict.fromkeys(values))
        index = np.array([options.index(v) for v in values])
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in options]
    rows = []
    for b, label in enumerate(labels):
        members = [e for e, i in zip(entries, index, strict=True) if i == b]
        n_eps = episodes * len(members)
        rows.append(Bin(
            label=label,
            n_tasks=len(members),
            episodes=n_eps,
            successes=round(sum(e["success_rate"] for e in members) * episodes),
            collisions=round(sum(e["collision_rate"] for e in members) * episodes),
            return_mean=float(np.mean([e["return_mean"] for e in members])) if members else math.nan,
            extra_means={k: _mean([e.get(k) for e in members]) for k in extra},
        ))
    return rows


def _mean(values: Sequence[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def replay_command(checkpoint: str, values: Mapping[str, Any]) -> str:
    """The viewer command that replays exactly this task: every sampled key pinned with ``--set`` (floats written
    with ``repr``, which round-trips, so the pinned scenario samples the same task and task ID)."""
    sets = " ".join(f"--set {k}={v!r}" if isinstance(v, float) else f"--set {k}={v}" for k, v in values.items())
    return f"python -m viz.replay --checkpoint {checkpoint} {sets}"


def worst_tasks(entries: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The ``n`` worst tasks: most collisions first, then fewest arrivals, then lowest return."""
    return sorted(entries, key=lambda e: (-e["collision_rate"], e["success_rate"], e["return_mean"]))[:n]


def write_failure_report(report: Mapping[str, Any], scenario: Any, out_dir: str | Path, *, checkpoint: str,
                         bins: int = 6, worst: int = 10) -> Path:
    """Write the failure report of an intersection evaluation into ``out_dir``; returns the Markdown file.

    Args:
        report: :func:`intersection_meta.evaluate.evaluate_checkpoint`'s result (its ``per_task`` entries).
        scenario: The evaluated :class:`intersection_meta.scenario.Scenario` (its sampled keys are the parameters).
        out_dir: Folder to write into (created).
        checkpoint: The checkpoint as the user named it, for the replay commands.
        bins: Bins per numeric parameter.
        worst: Rows of the worst-task table.

    Raises:
        ValueError: the evaluation has no success/collision outcomes (not an intersection scenario).
    """
    entries = list(report["per_task"])
    if not entries or "collision_rate" not in entries[0]:
        raise ValueError("--report needs an intersection scenario (success and collision outcomes per task)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    episodes = int(report["episodes_per_task"])
    extra = sorted({k for e in entries for k, v in e.items()
                    if k not in _BASE_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)})
    params = {k: p for k, p in scenario.sampled_keys().items() if len(p.values()) > 1}
    values = [scenario.task_values(task_from_dict(e["task"])) for e in entries]
    tables = {k: bin_rows([v[k] for v in values], entries, episodes, bin_edges(p, bins), extra)
              for k, p in params.items()}

    _write_csv(out / "tasks.csv", entries, values, extra)
    numeric = [k for k in params if bin_edges(params[k], bins) is not None]
    figures = _write_figures(out, tables)
    if len(numeric) >= 2:
        figures["pairs"] = _write_pairs(out / "pairs.png", numeric, values, [e["collision_rate"] for e in entries])
    overall = bin_rows([0.0] * len(entries), entries, episodes, None, extra)[0]
    pinned = {e["task_id"]: {k: v[k] for k in params} for e, v in zip(entries, values, strict=True)}
    lines = _markdown(report, checkpoint, overall, tables, figures, extra, worst_tasks(entries, worst), pinned)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_csv(path: Path, entries: Sequence[Mapping[str, Any]], values: Sequence[Mapping[str, Any]],
               extra: Sequence[str]) -> None:
    keys = list(values[0])
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task_id", *keys, "success_rate", "collision_rate", "return_mean", *extra])
        for e, v in zip(entries, values, strict=True):
            w.writerow([e["task_id"], *(v[k] for k in keys), e["success_rate"], e["collision_rate"],
                        e["return_mean"], *(e.get(k, "") for k in extra)])


def _file_key(key: str) -> str:
    return key.replace(".", "_")


def _plot_param(ax: Any, key: str, rows: Sequence[Bin]) -> None:
    x = np.arange(len(rows))
    ax.bar(x, [r.n_tasks for r in rows], color="#c8c8c8", label="tasks")
    ax.set_ylabel("tasks")
    ax.set_xticks(x, [r.label for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_title(key, fontsize=9)
    rates = ax.twinx()
    rates.plot(x, [r.success_rate for r in rows], "o-", color="#2a9d3a", label="success")
    rates.plot(x, [r.collision_rate for r in rows], "s-", color="#d62828", label="collision")
    # headroom above the bars and above rate 1 for the legend
    ax.set_ylim(0, 1.4 * max((r.n_tasks for r in rows), default=1))
    rates.set_ylim(-0.03, 1.4)
    rates.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    rates.set_ylabel("rate")
    handles = ax.get_legend_handles_labels()[0] + rates.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper center", ncol=3)


def _write_figures(out: Path, tables: Mapping[str, Sequence[Bin]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = {}
    for key, rows in tables.items():
        fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=110)
        _plot_param(ax, key, rows)
        fig.tight_layout()
        names[key] = f"param_{_file_key(key)}.png"
        fig.savefig(out / names[key])
        plt.close(fig)
    if tables:
        cols = min(3, len(tables))
        n_rows = -(-len(tables) // cols)
        fig, axes = plt.subplots(n_rows, cols, figsize=(5.0 * cols, 3.4 * n_rows), dpi=100, squeeze=False)
        for ax, (key, rows) in zip(axes.flat, tables.items(), strict=False):
            _plot_param(ax, key, rows)
        for ax in list(axes.flat)[len(tables):]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(out / "overview.png")
        plt.close(fig)
        names["overview"] = "overview.png"
    return names


def _write_pairs(path: Path, keys: Sequence[str], values: Sequence[Mapping[str, Any]],
                 collision_rates: Sequence[float]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]][:3]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.8), dpi=100, squeeze=False,
                             layout="constrained")
    order = np.argsort(collision_rates, kind="stable")  # crashes drawn last, on top
    for ax, (a, b) in zip(axes.flat, pairs, strict=True):
        points = ax.scatter([values[i][a] for i in order], [values[i][b] for i in order],
                            c=[collision_rates[i] for i in order], cmap="RdYlGn_r", vmin=0.0, vmax=1.0, s=26,
                            edgecolors="#333333", linewidths=0.4)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
    fig.colorbar(points, ax=list(axes.flat), label="collision rate")
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _rate(count: int, n: int) -> str:
    if n == 0:
        return "-"
    _, lo, hi = wilson_interval(count, n)
    return f"{count / n:.0%} [{lo:.0%}, {hi:.0%}]"


def _headline(tables: Mapping[str, Sequence[Bin]], overall: Bin, what: str) -> str:
    """The bin whose rate of ``what`` (collision or failure to arrive) stands out most, if any does."""
    best = None
    for key, rows in tables.items():
        for r in rows:
            if r.episodes == 0:
                continue
            count = r.collisions if what == "collision" else r.episodes - r.successes
            total = overall.collisions if what == "collision" else overall.episodes - overall.successes
            _, lo, _ = wilson_interval(count, r.episodes)
            if lo > total / overall.episodes and (best is None or count / r.episodes > best[0]):
                best = (count / r.episodes, key, r, count, total)
    label = "collides" if what == "collision" else "fails to arrive"
    if best is None:
        return (f"- No parameter bin has a {what} rate clearly above the overall one (95% Wilson lower bound above "
                f"the overall rate).")
    _, key, r, count, total = best
    return (f"- **The policy {label} most when `{key}` is in {r.label}**: {_rate(count, r.episodes)} of "
            f"{r.episodes} episodes ({r.n_tasks} tasks), against {total / overall.episodes:.0%} overall.")


def _markdown(report: Mapping[str, Any], checkpoint: str, overall: Bin, tables: Mapping[str, Sequence[Bin]],
              figures: Mapping[str, str], extra: Sequence[str], worst: Sequence[Mapping[str, Any]],
              pinned: Mapping[str, Mapping[str, Any]]) -> list[str]:
    k, episodes = report["steps"][-1]["adapt_step"], report["episodes_per_task"]
    lines = [
        f"# Where the policy fails: {report['algo']} on {report['scenario']}",
        "",
        f"Checkpoint `{checkpoint}` (iteration {report['iteration']}), {report['tasks']} held-out tasks x "
        f"{episodes} episodes after {k} adaptation step{'s' if k != 1 else ''}, simulator {report['simulator']}. "
        f"Rates are over episodes, with 95% Wilson intervals.",
        "",
        f"Overall: success {_rate(overall.successes, overall.episodes)}, collision "
        f"{_rate(overall.collisions, overall.episodes)}, mean return {overall.return_mean:.2f}.",
        "",
        "## Summary",
        "",
        _headline(tables, overall, "collision"),
        _headline(tables, overall, "arrival"),
        "",
    ]
    if "overview" in figures:
        lines += [f"![overview]({figures['overview']})", ""]
    if "pairs" in figures:
        lines += ["Each task in the plane of two numeric parameters, coloured by its collision rate:", "",
                  f"![pairs]({figures['pairs']})", ""]
    extra_head = "".join(f" mean {m} |" for m in extra)
    for key, rows in tables.items():
        lines += [f"## `{key}`", "", f"![{key}]({figures[key]})", "",
                  f"| bin | tasks | success | collision | mean return |{extra_head}",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(extra)]
        for r in rows:
            extras = "".join(f" {r.extra_means[m]:.3g} |" for m in extra)
            lines.append(f"| {r.label} | {r.n_tasks} | {_rate(r.successes, r.episodes)} | "
                         f"{_rate(r.collisions, r.episodes)} | {r.return_mean:.2f} |{extras}")
        lines.append("")
    lines += ["## Worst tasks", "", "Most collisions first, then fewest arrivals, then lowest return. Each command "
              "replays the task before and after adaptation (every sampled key pinned with `--set`).", "",
              "| task | values | success | collision | return | replay |", "|---|---|---:|---:|---:|---|"]
    for e in worst:
        v = pinned[e["task_id"]]
        shown = ", ".join(f"{key}={_show(x)}" for key, x in v.items())
        lines.append(f"| `{e['task_id']}` | {shown} | {e['success_rate']:.0%} | {e['collision_rate']:.0%} | "
                     f"{e['return_mean']:.2f} | `{replay_command(checkpoint, v)}` |")
    return lines


def _show(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
