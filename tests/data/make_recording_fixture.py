"""Regenerate ``intersection_pair.npz``: one task of ``straight_vs_left_turner`` (task seed 0, index 2),
recorded with two scripted policies, labelled like a pre/post adaptation pair (episode 0):

* "pre-adaptation": always FASTER, which collides with the left-turner;
* "adapted (1 steps)": SLOWER for two decisions, then FASTER.

Run from the repository root: ``python tests/data/make_recording_fixture.py``.
"""

from __future__ import annotations

from pathlib import Path

from intersection_meta.envs.factory import make_env
from intersection_meta.recording import record_episode, save_recordings
from intersection_meta.scenario import load_scenario


def main() -> None:
    task = load_scenario("straight_vs_left_turner").sample_tasks(3, seed=0)[2]
    env = make_env(task)
    decisions: list[int] = []

    def cautious(obs: object) -> int:
        decisions.append(0)
        return 0 if len(decisions) <= 2 else 2

    recordings = [
        record_episode(env, lambda obs: 2, seed=3, label="pre-adaptation", task=task, episode=0),
        record_episode(env, cautious, seed=3, label="adapted (1 steps)", task=task, episode=0),
    ]
    path = save_recordings(Path(__file__).with_name("intersection_pair.npz"), recordings)
    print(path, [(r.label, r.outcome, r.n_frames) for r in recordings])


if __name__ == "__main__":
    main()
