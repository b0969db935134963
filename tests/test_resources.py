"""Where shipped data lives: named scenarios and shipped policies, checkpoint names, the commit a run records."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from intersection_meta import resources, scenario
from intersection_meta.cli import scenarios
from intersection_meta.checkpoint import CheckpointError, git_sha, load_raw, run_dir_of

REPO = Path(__file__).resolve().parent.parent


def test_checkout_data_is_the_repository_folders():
    # The tests run from a checkout: the package has no _data/ copy, so the top-level folders are used.
    assert resources.scenario_dir() == REPO / "scenarios" == scenario.SCENARIO_DIR
    assert resources.policy_dir() == REPO / "policies"
    assert "yield_left" in scenario.available_scenarios()


def test_installed_layout_wins_over_the_checkout(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "intersection_meta"
    (package / "_data" / "scenarios").mkdir(parents=True)
    monkeypatch.setattr(resources, "PACKAGE_DIR", package)
    assert resources.scenario_dir() == package / "_data" / "scenarios"
    assert resources.policy_dir() == package / "_data" / "policies"  # missing: an empty place, not the checkout


@pytest.mark.parametrize("name", ["yield_left", "policies:yield_left", "yield_left_directed_maml",
                                  "policies:yield_left_directed_maml", "policies:yield_left_directed_maml.pt"])
def test_shipped_policy_names_resolve_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resources.resolve_checkpoint(name) == REPO / "policies" / "yield_left_directed_maml.pt"
    assert load_raw(name)["algo"] == "directed_maml"


def test_paths_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yield_left").mkdir()  # an existing run directory of that name wins over the shipped policy
    assert resources.resolve_checkpoint("yield_left") == Path("yield_left")
    assert resources.resolve_checkpoint("runs/x/last.pt") == Path("runs/x/last.pt")
    assert resources.resolve_checkpoint("other_name") == Path("other_name")


def test_unknown_shipped_policy_is_a_one_line_error_listing_them():
    with pytest.raises(CheckpointError, match=r"policies:nope: no shipped policy of that name; shipped policies: "
                                              r"policies:yield_left_directed_maml$"):
        load_raw("policies:nope")


def test_shipped_policy_entry_only_for_shipped_files(tmp_path):
    shipped = REPO / "policies" / "yield_left_directed_maml.pt"
    assert resources.shipped_policy_entry(shipped)["scenario"] == "yield_left"
    copy = tmp_path / "yield_left_directed_maml.pt"
    copy.write_bytes(shipped.read_bytes())
    assert resources.shipped_policy_entry(copy) is None


def test_run_dir_of_a_checkpoint(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert run_dir_of(tmp_path / "run") == tmp_path / "run"
    assert run_dir_of(tmp_path / "run" / "checkpoints" / "last.pt") == tmp_path / "run"
    assert run_dir_of(REPO / "policies" / "yield_left_directed_maml.pt") is None


def test_git_sha_names_a_checkout_only_at_its_top(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git("rev-parse", "HEAD").strip()
    assert git_sha(tmp_path) == head
    (tmp_path / "f.txt").write_text("b")
    assert git_sha(tmp_path) == head + "-dirty"
    # A package installed in a venv inside some checkout is not that checkout's code.
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    assert git_sha(site).startswith("unknown")


def test_scenarios_list_fails_when_it_finds_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scenario, "SCENARIO_DIR", tmp_path)
    monkeypatch.setattr(scenarios, "SCENARIO_DIR", tmp_path)
    assert scenarios.main(["list"]) == 2
    err = capsys.readouterr().err
    assert "no scenarios found" in err and str(tmp_path) in err and err.count("\n") == 1


def test_shipped_policy_index_matches_a_fresh_evaluation():
    """The numbers policies/index.yaml records for the shipped policy are what its evaluation command prints today
    (the same held-out tasks and seeds, fast backend)."""
    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.evaluate import evaluate_checkpoint

    for name, entry in resources.policy_index().items():
        recorded = entry["evaluation"]
        ckpt = load_checkpoint(resources.policy_dir() / name)
        report = evaluate_checkpoint(ckpt, n_tasks=40, episodes_per_task=20, adapt_steps=1, seed=entry["seed"],
                                     backend=entry["backend"])
        pre, post = report["steps"]
        assert (round(pre["return_mean"], 2), round(post["return_mean"], 2)) == (
            recorded["return"]["pre"], recorded["return"]["post_1"]), name
        assert round(report["greedy"]["return_mean"], 2) == recorded["return"]["post_1_greedy"], name
        assert (round(pre["collision_rate"], 3), round(post["collision_rate"], 3)) == (
            recorded["collision_rate"]["pre"], recorded["collision_rate"]["post_1"]), name
        assert entry["git_sha"] == load_raw(resources.policy_dir() / name)["git_sha"], name
