"""Networks: functional categorical / Gaussian MLP policies for meta-learning.

Every policy is an ordinary ``nn.Module`` whose ``forward(obs)`` returns a
``torch.distributions.Distribution``. For meta-learning, :meth:`distribution` also accepts an explicit
``params`` mapping (name -> tensor) and evaluates the same network with those tensors through
:func:`torch.func.functional_call`, so adapted parameters are plain tensors in an autograd graph and the
module itself is never copied or mutated.

Observations are flat: ``obs`` has shape ``[..., obs_dim]`` (rollouts flatten multi-dimensional observations).
A policy may standardise its inputs first (``input_norm``: :class:`intersection_meta.input_norm.Standardize`, fixed
buffers, never trained): the statistics are part of the policy's ``state_dict``, so checkpoints carry them, and
parameter names (``logits_net.*``) are the same with and without it.

A policy may also take a per-episode latent (``latent_dim > 0``: MAESN, Gupta et al. 2018, "Meta-Reinforcement
Learning of Structured Exploration Strategies"): the rollout draws ``z ~ N(latent_mu, diag(exp(latent_logstd))^2)``
once per episode (:meth:`_FunctionalPolicy.episode_latents`) and appends it to every observation of the episode, so
the network's input is ``[obs, z]`` (``obs_dim + latent_dim``). ``latent_mu`` and ``latent_logstd`` are ordinary
parameters: adaptation moves the latent distribution of a task, and with it how the policy explores. The input
standardisation covers the ``obs_dim`` observation features only; ``z`` goes in as drawn.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.func import functional_call

#: A policy's parameters by name, as returned by :func:`params_of` (``nn.Module.named_parameters`` names).
Params = dict[str, Tensor]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def params_of(module: nn.Module) -> Params:
    """The module's parameters by name (the live ``nn.Parameter`` objects, not copies)."""
    return dict(module.named_parameters())


def _mlp(in_dim: int, out_dim: int, hidden: Sequence[int], activation: str, out_gain: float) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}")
    if in_dim < 1 or out_dim < 1 or any(int(h) < 1 for h in hidden):
        raise ValueError(
            f"layer sizes must be positive, got in={in_dim}, hidden={tuple(hidden)}, out={out_dim}"
        )
    layers: list[nn.Module] = []
    sizes = [in_dim, *[int(h) for h in hidden]]
    for a, b in itertools.pairwise(sizes):
        linear = nn.Linear(a, b)
        nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2.0)))
        nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATIONS[activation]()]
    head = nn.Linear(sizes[-1], out_dim)
    # A small output layer starts the policy near uniform / near zero-mean (cleanrl, SB3 convention).
    nn.init.orthogonal_(head.weight, gain=out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


class _FunctionalPolicy(nn.Module):
    """Shared functional call path: ``distribution(obs, params)``; optional input standardisation; optional
    per-episode latent (``latent_dim``, see the module docstring).

    Attributes:
        obs_dim: Size of the env observation.
        latent_dim: Size of the per-episode latent ``z`` (0: none); the network's input is ``obs_dim + latent_dim``.
    """

    def __init__(self, obs_dim: int, latent_dim: int = 0) -> None:
        super().__init__()
        if int(latent_dim) < 0:
            raise ValueError(f"latent_dim must be >= 0, got {latent_dim}")
        self.obs_dim = int(obs_dim)
        self.latent_dim = int(latent_dim)
        self.input_norm: nn.Module | None = None  # a registered submodule once set (set_input_norm)
        if self.latent_dim:  # z ~ N(0, I) at initialisation (MAESN's prior)
            self.latent_mu = nn.Parameter(torch.zeros(self.latent_dim))
            self.latent_logstd = nn.Parameter(torch.zeros(self.latent_dim))

    @property
    def input_dim(self) -> int:
        """Size of the network's input: the observation and the latent."""
        return self.obs_dim + self.latent_dim

    def episode_latents(
        self,
        params: Mapping[str, Tensor] | None,
        n_episodes: int,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> Tensor | None:
        """One latent per episode, ``[n_episodes, latent_dim]``: ``mu + sigma * eps`` with ``eps ~ N(0, I)`` drawn
        from ``generator`` (``mu`` itself if ``deterministic``), at ``params`` (None: the module's own); None for a
        policy without a latent (the generator is then not touched)."""
        if not self.latent_dim:
            return None
        params = {} if params is None else params
        mu = params.get("latent_mu", self.latent_mu).detach()
        logstd = params.get("latent_logstd", self.latent_logstd).detach()
        return draw_latents(mu.expand(n_episodes, -1), logstd.expand(n_episodes, -1), generator, deterministic)

    def set_input_norm(self, norm: nn.Module) -> None:
        """Standardise observations with ``norm`` (an :class:`~intersection_meta.input_norm.Standardize`) before
        the MLP, from now on (its buffers join the ``state_dict``; it has no parameters)."""
        if any(True for _ in norm.parameters()):
            raise ValueError("an input normaliser must have no trainable parameters")
        self.input_norm = norm

    def _inputs(self, obs: Tensor) -> Tensor:
        if self.input_norm is None:
            return obs
        if not self.latent_dim:
            return self.input_norm(obs)
        return torch.cat([self.input_norm(obs[..., : self.obs_dim]), obs[..., self.obs_dim :]], dim=-1)

    def distribution(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> Distribution:
        """Action distribution at ``obs`` (``[..., obs_dim]``), with the module's own parameters or
        ``params``.

        Args:
            obs: Flat observations, any leading batch shape.
            params: Optional name -> tensor mapping (same names as :func:`params_of`); missing names fall back
                to the module's own parameters.

        Returns:
            A distribution with batch shape ``obs.shape[:-1]``.
        """
        if params is None:
            return self(obs)
        return functional_call(self, dict(params), (obs,))

    def grouped_distribution(self, obs: Tensor, stacked: Mapping[str, Tensor]) -> Distribution:
        """Action distribution with a different parameter set per group, in one batched call.

        Args:
            obs: ``[K, G, obs_dim]``: ``G`` observations for each of ``K`` parameter sets.
            stacked: name -> tensor with a leading ``K`` axis (:func:`stack_params` of ``K`` parameter dicts).

        Returns:
            A distribution with batch shape ``[K * G]`` (group-major), equal to concatenating
            ``distribution(obs[k], params_k)`` over ``k``.
        """
        return self._head(torch.func.vmap(self._grouped_body)(dict(stacked), obs))

    def _grouped_body(self, params: Params, obs: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _head(self, out: Tensor | tuple[Tensor, Tensor]) -> Distribution:
        raise NotImplementedError


class CategoricalMLP(_FunctionalPolicy):
    """MLP policy over ``n_actions`` discrete actions: ``pi(a|s) = softmax(MLP(s))_a`` (``MLP([s, z])`` with a
    latent)."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        latent_dim: int = 0,
    ) -> None:
        super().__init__(obs_dim, latent_dim)
        self.n_actions = int(n_actions)
        self.logits_net = _mlp(self.input_dim, self.n_actions, hidden, activation, out_gain=0.01)

    def forward(self, obs: Tensor) -> Categorical:
        return Categorical(logits=self.logits_net(self._inputs(obs)))

    def _grouped_body(self, params: Params, obs: Tensor) -> Tensor:
        return functional_call(self.logits_net, _sub_params(params, "logits_net."), (self._inputs(obs),))

    def _head(self, out: Tensor) -> Categorical:  # logits [K, G, n_actions]
        return Categorical(logits=out.reshape(-1, self.n_actions))


class GaussianMLP(_FunctionalPolicy):
    """Diagonal Gaussian policy ``N(MLP(s), diag(exp(log_std))^2)`` with a state-independent ``log_std``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
        latent_dim: int = 0,
    ) -> None:
        super().__init__(obs_dim, latent_dim)
        if init_std <= 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.act_dim = int(act_dim)
        self.mean_net = _mlp(self.input_dim, self.act_dim, hidden, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(np.log(init_std))))

    def forward(self, obs: Tensor) -> Independent:
        mean = self.mean_net(self._inputs(obs))
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)

    def _grouped_body(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean = functional_call(self.mean_net, _sub_params(params, "mean_net."), (self._inputs(obs),))
        return mean, params["log_std"].exp().expand_as(mean)

    def _head(self, out: tuple[Tensor, Tensor]) -> Independent:  # mean, std [K, G, act_dim]
        mean, std = out
        return Independent(Normal(mean.reshape(-1, self.act_dim), std.reshape(-1, self.act_dim)), 1)


def _sub_params(params: Mapping[str, Tensor], prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def draw_latents(
    mu: Tensor, logstd: Tensor, generator: torch.Generator | None = None, deterministic: bool = False
) -> Tensor:
    """``z = mu + exp(logstd) * eps`` with ``eps ~ N(0, I)`` from ``generator`` (``mu`` if ``deterministic``), for
    ``mu``, ``logstd`` of equal shape ``[B, d]``; no gradient."""
    if deterministic:
        return mu.detach().clone()
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    return (mu + logstd.exp() * eps).detach()


def latent_log_prob(mu: Tensor, logstd: Tensor, z: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(logstd))^2)`` summed over the last axis (``z`` ``[B, d]``, ``mu``/``logstd`` ``[d]``):
    ``-sum(0.5 ((z - mu) / sigma)^2 + logstd + 0.5 log(2 pi))``."""
    return -(0.5 * ((z - mu) / logstd.exp()) ** 2 + logstd + 0.5 * float(np.log(2 * np.pi))).sum(-1)


def latent_kl_to_prior(mu: Tensor, logstd: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(logstd))^2) || N(0, I)) = sum(0.5 (mu^2 + sigma^2 - 1) - logstd)`` (MAESN's prior term)."""
    return (0.5 * (mu**2 + (2 * logstd).exp() - 1) - logstd).sum()


def stack_params(params_list: Sequence[Mapping[str, Tensor]]) -> Params:
    """``K`` parameter dicts with the same names -> one dict of tensors with a leading ``K`` axis."""
    return {name: torch.stack([p[name] for p in params_list]) for name in params_list[0]}


def sample_actions(
    dist: Distribution, generator: torch.Generator | None = None, deterministic: bool = False
) -> Tensor:
    """Draw actions from a policy distribution with an explicit ``torch.Generator``.

    ``Distribution.sample`` cannot take a generator, so sampling is written out here: categorical by
    ``torch.multinomial``, Gaussian by ``mean + std * eps``. ``deterministic`` returns the mode (argmax /
    mean).

    Raises:
        TypeError: for a distribution type other than ``Categorical`` or ``Independent(Normal)``.
    """
    if isinstance(dist, Categorical):
        if deterministic:
            return dist.probs.argmax(dim=-1)
        probs = dist.probs.reshape(-1, dist.probs.shape[-1])
        return torch.multinomial(probs, 1, generator=generator).reshape(dist.batch_shape)
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        mean, std = dist.base_dist.loc, dist.base_dist.scale
        if deterministic:
            return mean.clone()
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + std * eps
    raise TypeError(f"cannot sample from {type(dist).__name__}; expected Categorical or Independent(Normal)")


def build_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    init_std: float = 1.0,
    input_norm: str = "none",
    latent_dim: int = 0,
) -> CategoricalMLP | GaussianMLP:
    """A policy for single (not batched) spaces: ``CategoricalMLP`` for ``Discrete``, ``GaussianMLP`` for
    ``Box``.

    The observation space must be a ``Box``; its shape is flattened to ``obs_dim``. ``input_norm="fitted"`` gives
    the policy an identity :class:`~intersection_meta.input_norm.Standardize` (mean 0, std 1) to be fitted
    (:func:`intersection_meta.input_norm.fit_input_norm`) or loaded from a checkpoint's ``state_dict``.
    ``latent_dim > 0`` adds the per-episode latent (module docstring).

    Raises:
        ValueError: for an unsupported observation or action space.
    """
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(f"observation space must be a Box, got {observation_space}")
    obs_dim = int(np.prod(observation_space.shape))
    policy: CategoricalMLP | GaussianMLP
    if isinstance(action_space, gym.spaces.Discrete):
        policy = CategoricalMLP(
            obs_dim, int(action_space.n), hidden=hidden_sizes, activation=activation, latent_dim=latent_dim
        )
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        policy = GaussianMLP(
            obs_dim,
            int(action_space.shape[0]),
            hidden=hidden_sizes,
            activation=activation,
            init_std=init_std,
            latent_dim=latent_dim,
        )
    else:
        raise ValueError(f"action space must be Discrete or a 1-D Box, got {action_space}")
    if input_norm == "fitted":
        from intersection_meta.input_norm import Standardize

        policy.set_input_norm(Standardize(torch.zeros(obs_dim), torch.ones(obs_dim)))
    elif input_norm != "none":
        raise ValueError(f"unknown input_norm {input_norm!r}; allowed: none, fitted")
    return policy
