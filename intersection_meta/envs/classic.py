"""CartPole and LunarLander task families: gymnasium's classic envs with their physics set by a task."""

from __future__ import annotations

import gymnasium as gym

from intersection_meta.tasks import CartPoleTask, LunarLanderTask

#: LunarLander-v3 accepts gravity strictly inside this interval [m/s^2].
LUNAR_GRAVITY_BOUNDS_MPS2: tuple[float, float] = (-12.0, 0.0)


def apply_cartpole_physics(cartpole: gym.Env, task: CartPoleTask) -> None:
    """Set ``task``'s physics on an unwrapped ``CartPoleEnv``, including the derived quantities.

    ``CartPoleEnv.step`` uses ``total_mass`` and ``polemass_length``, which ``__init__`` derives once, so they
    are recomputed here. These are instance attributes: they survive ``reset()``.
    """
    cartpole.length = float(task.pole_half_length_m)  # half the pole's length [m]
    cartpole.masspole = float(task.pole_mass_kg)
    cartpole.masscart = float(task.cart_mass_kg)
    cartpole.gravity = float(task.gravity_mps2)
    cartpole.force_mag = float(task.force_n)
    cartpole.total_mass = cartpole.masspole + cartpole.masscart
    cartpole.polemass_length = cartpole.masspole * cartpole.length


def validate_cartpole_task(task: CartPoleTask) -> None:
    """Raise ``ValueError`` naming the field if a CartPole task is not physical."""
    for name in ("pole_half_length_m", "pole_mass_kg", "cart_mass_kg", "gravity_mps2", "force_n"):
        if not getattr(task, name) > 0:
            raise ValueError(f"CartPoleTask.{name} must be > 0, got {getattr(task, name)}")
    if int(task.max_episode_steps) < 1:
        raise ValueError(f"CartPoleTask.max_episode_steps must be >= 1, got {task.max_episode_steps}")


def validate_lunarlander_task(task: LunarLanderTask) -> None:
    """Raise ``ValueError`` naming the field if gymnasium would reject a LunarLander task."""
    low, high = LUNAR_GRAVITY_BOUNDS_MPS2
    if not low < task.gravity_mps2 < high:
        raise ValueError(f"LunarLanderTask.gravity_mps2 must be in ({low}, {high}), got {task.gravity_mps2}")
    if not 0.0 <= task.wind_power <= 20.0:
        raise ValueError(f"LunarLanderTask.wind_power should be in [0, 20], got {task.wind_power}")
    if not 0.0 <= task.turbulence_power <= 2.0:
        raise ValueError(f"LunarLanderTask.turbulence_power should be in [0, 2], got {task.turbulence_power}")
    if int(task.max_episode_steps) < 1:
        raise ValueError(f"LunarLanderTask.max_episode_steps must be >= 1, got {task.max_episode_steps}")


def make_cartpole_env(task: CartPoleTask, render_mode: str | None = None) -> gym.Env:
    """``CartPole-v1`` (TimeLimit ``task.max_episode_steps``) with ``task``'s physics."""
    validate_cartpole_task(task)
    env = gym.make("CartPole-v1", max_episode_steps=int(task.max_episode_steps), render_mode=render_mode)
    apply_cartpole_physics(env.unwrapped, task)
    return env


def make_lunarlander_env(task: LunarLanderTask, render_mode: str | None = None) -> gym.Env:
    """``LunarLander-v3`` with ``task``'s gravity, wind and action type."""
    validate_lunarlander_task(task)
    return gym.make(
        "LunarLander-v3",
        continuous=bool(task.continuous),
        gravity=float(task.gravity_mps2),
        enable_wind=bool(task.enable_wind),
        wind_power=float(task.wind_power),
        turbulence_power=float(task.turbulence_power),
        max_episode_steps=int(task.max_episode_steps),
        render_mode=render_mode,
    )
