"""Run config: sections, the strict loader, --set forms, old flat checkpoints, the registry and the CLI papercuts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from intersection_meta.checkpoint import load_checkpoint, load_raw
from intersection_meta.config import (
    ConfigError,
    PGConfig,
    RunConfig,
    config_keys,
    load_config_file,
    make_config,
    split_overrides,
)
from intersection_meta.registry import ALGORITHMS, BACKENDS, DIRECTED_MODES
from intersection_meta.schema import parse_yaml

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO)


# -- old checkpoints ------------------------------------------------------------------------------------------
def test_flat_config_checkpoint_loads_and_reproduces_its_logits_and_adaptation():
    """tests/data/flat_config_checkpoint.pt was written by the code before the sections (commit 2888602)."""
    from intersection_meta.adaptation import adapt_and_rollout

    raw = load_raw(DATA / "flat_config_checkpoint.pt")
    assert "gae_lambda" in raw["config"] and "pg" not in raw["config"]  # really the old flat layout
    expected = json.loads((DATA / "flat_config_checkpoint.json").read_text())
    ckpt = load_checkpoint(DATA / "flat_config_checkpoint.pt")
    assert (ckpt.config.pg.gae_lambda, ckpt.config.meta.inner_lr) == (0.95, 0.07)
    assert (ckpt.config.meta.algo, ckpt.config.meta.directed_mode, ckpt.config.policy.hidden_sizes) == (
        "directed_meta_sgd",
        "fomaml",
        (8,),
    )
    obs = torch.tensor(expected["obs"])
    torch.testing.assert_close(ckpt.policy.distribution(obs).logits, torch.tensor(expected["logits"]), rtol=0, atol=0)
    a = expected["adapt"]
    tasks = ckpt.scenario.sample_tasks(a["n_tasks"], seed=a["task_seed"])
    result = adapt_and_rollout(
        ckpt.learner, tasks, adapt_steps=1, episodes_per_task=a["episodes_per_task"], seed=a["seed"], backend="highway"
    )
    assert [float(e.returns.mean()) for e in result.episodes[0]] == expected["returns_pre"]
    for params, logits in zip(result.params[1], expected["adapted_logits"], strict=True):
        # the learned Meta-SGD step sizes and pg.gae_lambda = 0.95 both shape this step
        torch.testing.assert_close(ckpt.policy.distribution(obs, params).logits, torch.tensor(logits))


def test_shipped_policy_loads_with_sections():
    ckpt = load_checkpoint(REPO / "policies" / "yield_left_directed_maml.pt")
    # yield_left's run_defaults (scenarios/_base_intersection.yaml), as the README's main command applies them
    assert ckpt.config.meta.algo == "directed_maml" and ckpt.config.meta.inner_lr == 0.005
    assert ckpt.config.policy.warm_start == "gap_acceptance" and ckpt.config.pg.normalize_advantages is False
    assert ckpt.learner.directed is DIRECTED_MODES[ckpt.config.meta.directed_mode]


# -- one validation per key ---------------------------------------------------------------------------------
def test_directed_lr_decay_zero_is_a_one_line_error_at_load(tmp_path: Path):
    r = _cli("-m", "intersection_meta.train", "--set", "directed_lr_decay=0", "--no-eval")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: --set: meta.directed_lr_decay: got 0, out of range; expected a number in (0, 1]"
    bad = tmp_path / "run.yaml"
    bad.write_text("meta:\n  directed_lr_decay: 0.0\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: meta\.directed_lr_decay: got 0\.0, out of range"):
        make_config(load_config_file(bad), source=str(bad))
    assert make_config({"meta.directed_lr_decay": 1e-9}).meta.directed_lr_decay == 1e-9


def test_nested_dotted_and_flat_forms_give_the_same_config():
    nested = make_config({"pg": {"gae_lambda": 0.9}, "meta": {"algo": "maml"}, "policy": {"hidden_sizes": [8]}})
    dotted = make_config({"pg.gae_lambda": 0.9, "meta.algo": "maml", "policy.hidden_sizes": [8]})
    flat = make_config({"gae_lambda": 0.9, "algo": "maml", "hidden_sizes": [8]})
    assert nested == dotted == flat
    assert make_config(nested.to_dict()) == nested  # config.yaml / checkpoint round trip
    assert RunConfig().flat().keys() == config_keys().keys()


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"pg.gae_lamda": 1.0}, "pg.gae_lamda: unknown key (did you mean 'pg.gae_lambda'?)"),
        ({"meta_batchsize": 3}, "meta_batchsize: unknown key (did you mean 'meta_batch_size'?)"),
        ({"pg": 0.5}, "pg: got 0.5; expected a mapping of pg keys"),
        ({"meta": {"algo": "mamll"}}, "meta.algo: got 'mamll' (did you mean 'maml'?)"),
        ({"train.iterations": 1.5}, "train.iterations: got 1.5; expected an integer"),
        ({"pg.normalize_advantages": "yes"}, "pg.normalize_advantages: got 'yes'; expected true or false"),
        ({"policy.hidden_sizes": [0]}, "policy.hidden_sizes: got [0]; expected a non-empty list of positive"),
    ],
    ids=["dotted-typo", "flat-typo", "section-not-mapping", "algo", "int", "bool", "hidden"],
)
def test_bad_values_name_source_and_key(values, fragment):
    with pytest.raises(ConfigError, match="^cfg.yaml: ") as err:
        make_config(values, source="cfg.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_scientific_notation_is_a_number_in_set_and_in_files(tmp_path: Path):
    assert parse_yaml("1e-3") == 0.001 and parse_yaml("-2E+2") == -200.0 and parse_yaml(".5e1") == 5.0
    assert parse_yaml("1e3x") == "1e3x"  # not a number: stays a string (and fails type checks)
    run, scenario = split_overrides(["meta_lr=3e-4", "pg.baseline_reg=1e-6", "other.speed_mps=[6e0,9]"])
    assert run == {"train.meta_lr": 0.0003, "pg.baseline_reg": 1e-6}
    assert scenario == [("other.speed_mps", [6.0, 9])]
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  meta_lr: 1e-3\npg:\n  gae_lambda: 95e-2\n")
    config = make_config(load_config_file(path), source=str(path))
    assert (config.train.meta_lr, config.pg.gae_lambda) == (0.001, 0.95)


def test_set_on_the_train_command_line_reaches_the_run_config(tmp_path: Path):
    out = tmp_path / "run"
    r = _cli(
        "-m", "intersection_meta.train", "--scenario", "cartpole_physics", "--algo", "fomaml", "--quiet",
        "--no-tensorboard", "--set", "train.iterations=1", "--set", "meta_batch_size=2",
        "--set", "train.episodes_per_task=2", "--set", "eval_tasks=0", "--set", "episode.max_steps=10",
        "--set", "policy.hidden_sizes=[4]", "--set", "pg.gae_lambda=0.9", "--set", "entropy_coef=1e-2",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["simulator"] == "gymnasium CartPole-v1"  # not "highway" for a CartPole run
    stored = written["run"]
    assert stored["pg"]["gae_lambda"] == 0.9 and stored["pg"]["entropy_coef"] == 0.01
    assert stored["policy"]["hidden_sizes"] == [4] and stored["meta"]["algo"] == "fomaml"
    ckpt = load_checkpoint(out)
    assert ckpt.learner.loss_fn.keywords["pg"] is ckpt.config.pg  # the section goes to the loss unchanged
    assert ckpt.config.pg == PGConfig(gae_lambda=0.9, entropy_coef=0.01)
    assert "--adapt-steps 1   (the run's meta.inner_steps)" in r.stdout


def test_help_config_lists_every_key_by_section_with_default_and_meaning():
    from intersection_meta.cli.train import main

    buf = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, buf
    try:
        assert main(["--help-config"]) == 0
    finally:
        sys.stdout = sys_stdout
    text = buf.getvalue()
    for section in ("train", "meta", "pg", "policy", "env"):
        assert f"\n{section}:  " in text
    for key, leaf in config_keys().items():
        default = list(leaf.default) if isinstance(leaf.default, tuple) else leaf.default
        assert f"  {key} = {default!r}    (" in text, key
        assert leaf.help.split(";")[0] in text, key


# -- one registry ---------------------------------------------------------------------------------------------
def test_command_lines_read_the_registry():
    from intersection_meta.cli import bench, evaluate, train

    choices = {a.dest: a.choices for a in evaluate.build_parser()._actions}
    assert choices["backend"] == list(BACKENDS)
    helps = {a.dest: a.help for a in train.build_parser()._actions}
    assert all(name in helps["algo"] for name in ALGORITHMS) and all(b in helps["backend"] for b in BACKENDS)
    assert {a.dest: a.default for a in bench.build_parser()._actions}["algos"] == ",".join(ALGORITHMS)
    with pytest.raises(ConfigError, match=", ".join(DIRECTED_MODES)):
        make_config({"meta.directed_mode": "sgd"})


@pytest.mark.parametrize("module", ["train", "evaluate", "scenarios", "bench"])
def test_python_dash_m_entry_points_still_work(module):
    r = _cli("-m", f"intersection_meta.{module}", "--help")
    assert r.returncode == 0 and f"python -m intersection_meta.{module}" in r.stdout, r.stderr


# -- papercuts ------------------------------------------------------------------------------------------------
def test_progress_statistics_stay_readable_at_80_columns():
    from tqdm import tqdm

    from intersection_meta.trainer import PROGRESS_BAR_FORMAT, ProgressBar, format_progress_stats

    worst = {
        "return_pre": -1234.56,
        "return_post": -1234.56,
        "success_rate_post": 1.0,
        "collision_rate_post": 1.0,
        "time_iteration_s": 1234.5,
    }
    stats = format_progress_stats(worst)
    assert len(stats) <= 79 and all(w in stats for w in ("return", "success", "crash", "s/it"))
    assert "success" not in format_progress_stats(worst | {"success_rate_post": float("nan")})
    bar = tqdm.format_meter(57, 120, 3599.0, ncols=80, bar_format=PROGRESS_BAR_FORMAT)
    assert len(bar) <= 80 and bar.count("█") >= 30 * 57 // 120, bar  # the bar keeps most of the line
    out = io.StringIO()
    progress = ProgressBar(total=3, initial=0, file=out)
    progress.update(worst)
    progress.close()
    assert stats in out.getvalue()


def test_best_adapt_steps_is_what_the_evaluation_measured():
    from intersection_meta.evaluate import best_adapt_steps

    steps = [{"adapt_step": k, "return_mean": r} for k, r in enumerate([0.89, 2.24, 2.10, 2.01])]
    assert best_adapt_steps({"steps": steps}) == 1
    steps[0]["return_mean"] = 5.0
    assert best_adapt_steps({"steps": steps}) == 0


def test_report_header_names_the_real_simulator():
    from intersection_meta.evaluate import evaluate_checkpoint, format_report

    ckpt = load_checkpoint(DATA / "flat_config_checkpoint.pt")  # CartPole
    report = evaluate_checkpoint(ckpt, n_tasks=2, adapt_steps=0, episodes_per_task=2)
    header = format_report(report).splitlines()[0]
    assert "simulator gymnasium CartPole-v1" in header and "highway" not in header


def test_scenarios_show_applies_set(capsys):
    from intersection_meta.cli.scenarios import main

    assert main(["show", "yield_left", "--set", "other.speed_mps=[6,9]", "--set", "reward.collision_reward=-3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["other"]["speed_mps"] == [6.0, 9.0] and shown["reward"]["collision_reward"] == -3.0


def test_medium_of_a_numeric_choice_is_the_median_as_documented():
    from intersection_meta.scenario import Choice

    assert Choice((5.0, 7.0, 8.0, 10.0)).midpoint() == 7.5
    assert Choice((9.0, 5.0, 6.0)).midpoint() == 6.0
    assert Choice(("left", "straight")).midpoint() == "left"


def test_highway_env_pin_admits_the_verified_version_only():
    """The fast backend's fidelity (benchmarks/fidelity.py) was verified against highway-env 1.12.1."""
    import tomllib
    from importlib.metadata import version

    requirements = pytest.importorskip("packaging.requirements")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [requirements.Requirement(d) for d in deps if d.startswith("highway-env")]
    assert pin.specifier.contains(version("highway-env"))
    assert pin.specifier.contains("1.12.1") and not pin.specifier.contains("1.13.0")
    assert not pin.specifier.contains("1.11.0")


def test_stored_configs_without_a_key_keep_the_behaviour_they_ran_with():
    """Keys whose default changed (issue 9's design) read back as their pre-key behaviour from stored configs, and
    as today's default everywhere else."""
    from intersection_meta.config import PRE_KEY_BEHAVIOUR, RunConfig, stored_config

    fresh = RunConfig()
    assert (fresh.policy.input_norm, fresh.train.meta_lr_schedule, fresh.meta.directed_lr_decay) == (
        "fitted", "linear", 0.98
    )
    old = {s: v for s, v in fresh.to_dict().items()}
    old = {**old, "policy": {"hidden_sizes": [64, 64]}, "train": {"iterations": 7}, "meta": {"inner_lr": 0.1}}
    loaded = stored_config(old)
    assert {k: loaded.flat()[k] for k in PRE_KEY_BEHAVIOUR} == PRE_KEY_BEHAVIOUR
    assert loaded.train.iterations == 7 and loaded.meta.inner_lr == 0.1
    # a stored value always wins over the pre-key behaviour
    assert stored_config({"policy": {"input_norm": "fitted"}}).policy.input_norm == "fitted"
