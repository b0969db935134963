"""intersection_meta: meta-RL (Directed-MAML and baselines) for two-vehicle intersection crossings.

The pipeline, one module per stage: ``scenario`` (YAML -> task distribution) -> ``tasks`` -> ``envs`` (task ->
gymnasium env) -> ``rollout`` (-> ``Episodes``) -> ``pg`` (the loss) -> ``meta`` (the meta-learner) ->
``trainer`` -> ``checkpoint`` -> ``recording`` and ``viz/`` (the viewer). ``config`` holds the run config's
sections, ``registry`` the algorithm/backend/directed-mode names, ``cli/`` the command lines and ``bench/`` the
benchmark harness (see docs/ARCHITECTURE.md).

The flat public API::

    from intersection_meta import load_scenario, make_config, make_env, make_vector_env
    scenario = load_scenario("yield_left")
    tasks = scenario.sample_tasks(8, seed=0)
    env = make_env(tasks[0], seed=0)
    config = make_config({"pg.gae_lambda": 0.95})   # RunConfig: train, meta, pg, policy, env sections
"""

from __future__ import annotations

from intersection_meta.config import ConfigError, RunConfig, make_config
from intersection_meta.envs.factory import make_env, make_vector_env
from intersection_meta.scenario import Scenario, ScenarioError, load_scenario
from intersection_meta.tasks import CartPoleTask, IntersectionTask, LunarLanderTask, Task

__version__ = "0.1.0"

__all__ = [
    "CartPoleTask",
    "ConfigError",
    "IntersectionTask",
    "LunarLanderTask",
    "RunConfig",
    "Scenario",
    "ScenarioError",
    "Task",
    "__version__",
    "load_scenario",
    "make_config",
    "make_env",
    "make_vector_env",
]
