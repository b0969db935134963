"""The invariant Ray sampling rests on, checked without Ray: a batch collected slice by slice (each slice
simulating its own slots inside a padded batch) equals the batch collected in one vector env, bit for bit."""

from __future__ import annotations

import sys

import pytest
import torch

from intersection_meta.adaptation import GroupedPolicy, repeat_tasks
from intersection_meta.config import EnvConfig
from intersection_meta.distributed import (
    PaddedSliceEnv,
    RayError,
    RaySampler,
    RolloutWorker,
    SliceJob,
    import_ray,
    merge_slices,
    slot_slices,
)
from intersection_meta.envs.factory import make_batch_env, observation_and_action_spaces
from intersection_meta.networks import build_policy
from intersection_meta.rollout import Episodes, collect_episodes
from intersection_meta.scenario import load_scenario


def assert_same_episodes(a: Episodes, b: Episodes) -> None:
    for name in Episodes._fields:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), name
            for key in x:
                assert torch.equal(x[key], y[key]), f"{name}[{key}]"
        elif x is None:
            assert y is None, name
        else:
            assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize("n_slots,workers", [(7, 3), (4, 4), (3, 5), (1, 1)])
def test_slot_slices_cover_every_slot_once(n_slots: int, workers: int):
    slices = slot_slices(n_slots, workers)
    assert [s for lo, hi in slices for s in range(lo, hi)] == list(range(n_slots))
    sizes = [hi - lo for lo, hi in slices]
    assert len(slices) == min(n_slots, workers) and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize(
    "scenario,sets,grouped,latent_dim",
    [
        ("cartpole_physics", ["episode.max_steps=40"], False, 0),
        ("cartpole_physics", ["episode.max_steps=40"], True, 0),
        ("yield_left", ["episode.duration_s=3"], True, 0),
        ("yield_left", ["episode.duration_s=3"], True, 2),  # per-episode latents drawn per slot as in one batch
        ("lunarlander_gravity_wind", ["episode.max_steps=30"], False, 0),
    ],
)
def test_slices_merge_to_the_in_process_batch(scenario: str, sets: list[str], grouped: bool, latent_dim: int):
    tasks = load_scenario(scenario, sets).sample_tasks(3, seed=4)
    slots = repeat_tasks(tasks, 2)
    env_section = EnvConfig(backend="highway")
    obs_space, act_space = observation_and_action_spaces(tasks[0])
    torch.manual_seed(0)
    policy = build_policy(obs_space, act_space, hidden_sizes=(8,), latent_dim=latent_dim)
    per_task = [{k: v.detach() + 0.3 * i for k, v in policy.named_parameters()} for i in range(len(tasks))]
    sampled = GroupedPolicy(policy, per_task, 2) if grouped else policy
    seed = 1234

    whole_env = make_batch_env(slots, env_section)
    try:
        whole = collect_episodes(whole_env, sampled, None, seed=seed)
    finally:
        whole_env.close()

    worker = RolloutWorker(build_policy(obs_space, act_space, hidden_sizes=(8,), latent_dim=latent_dim))  # other values
    parts = []
    for lo, hi in slot_slices(len(slots), 4):  # 6 slots over 4 workers: slices cross task boundaries
        g0, g1 = lo // 2, -(-hi // 2)
        job = SliceJob(
            batch_key=f"b{lo}",
            tasks=tuple(slots[lo:hi]),
            lo=lo,
            total=len(slots),
            env=env_section,
            seed=seed,
            state={k: v.detach() for k, v in policy.state_dict().items()},
            groups=tuple(per_task[g0:g1]) if grouped else None,
            first_group=g0,
            group_size=2,
        )
        parts.append(worker.collect(job))
    worker.release()
    assert_same_episodes(merge_slices(parts), whole)


def test_padded_slice_env_seeds_its_slots_as_in_the_whole_batch():
    tasks = load_scenario("cartpole_physics").sample_tasks(4, seed=0)
    env_section = EnvConfig(backend="highway")
    whole_obs, _ = make_batch_env(tasks, env_section).reset(seed=99)
    padded = PaddedSliceEnv(make_batch_env(tasks[1:3], env_section), lo=1, total=4)
    obs, _ = padded.reset(seed=99)
    assert (obs[1:3] == whole_obs[1:3]).all() and not obs[[0, 3]].any()
    _, _, terminated, _, _ = padded.step(padded.action_space.sample())
    assert terminated[[0, 3]].all()
    with pytest.raises(ValueError, match="not inside a batch of 4"):
        PaddedSliceEnv(make_batch_env(tasks[:2], env_section), lo=3, total=4)


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
    with pytest.raises(RayError, match="not installed"):
        RaySampler(2)


def test_ray_workers_is_taken_out_of_the_set_items_and_checked(capsys):
    from intersection_meta.cli import train as train_cli
    from intersection_meta.config import ConfigError

    assert train_cli.pop_ray_workers(["meta_batch_size=4", "ray_workers=3", "other.speed_mps=[6,9]"]) == (
        3,
        ["meta_batch_size=4", "other.speed_mps=[6,9]"],
    )
    assert train_cli.pop_ray_workers(["pg.gamma=0.9"]) == (None, ["pg.gamma=0.9"])
    for bad in ("ray_workers=0", "ray_workers=two", "ray_workers"):
        with pytest.raises(ConfigError, match="ray_workers: got .*expected a positive integer"):
            train_cli.pop_ray_workers([bad])
    assert train_cli.main(["--scenario", "cartpole_physics", "--set", "ray_workers=2"]) == 2
    assert capsys.readouterr().err.strip().endswith("error: --set ray_workers=... needs --ray")
