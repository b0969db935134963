"""Input standardisation: closed-form statistics, constant features untouched, buffers saved and not trained."""

from __future__ import annotations

import pytest
import torch

from intersection_meta.input_norm import Standardize, fit_input_norm, standardizer_from_observations
from intersection_meta.networks import CategoricalMLP, params_of
from intersection_meta.scenario import load_scenario


def test_standardised_observations_have_zero_mean_unit_std_and_constants_pass_through():
    g = torch.Generator().manual_seed(0)
    obs = torch.cat([torch.randn(500, 2, generator=g) * torch.tensor([0.05, 3.0]) + 0.4, torch.ones(500, 1)], 1)
    st = standardizer_from_observations(obs)
    out = st(obs)
    torch.testing.assert_close(out[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    assert st.std[2].item() == 1.0  # constant feature: centred, not scaled
    torch.testing.assert_close(out[:, 2], torch.zeros(500))


def test_buffers_are_in_the_state_dict_and_not_parameters():
    policy = CategoricalMLP(3, 3, hidden=(8,))
    names_before = set(params_of(policy))

    policy.set_input_norm(Standardize(torch.ones(3), torch.ones(3) * 2))
    assert set(params_of(policy)) == names_before  # parameter names unchanged: old checkpoints still match
    assert {"input_norm.mean", "input_norm.std"} <= set(policy.state_dict())
    obs = torch.randn(4, 3)
    torch.testing.assert_close(policy.distribution(obs, params_of(policy)).logits, policy(obs).logits)
    # the MLP sees (obs - 1) / 2: the same logits as the plain policy on the standardised input
    plain = CategoricalMLP(3, 3, hidden=(8,))
    plain.load_state_dict({k: v for k, v in policy.state_dict().items() if not k.startswith("input_norm.")})
    torch.testing.assert_close(policy(obs).logits, plain((obs - 1) / 2).logits)


def test_fit_on_an_intersection_scenario_rescales_the_small_gap_features():
    scenario = load_scenario("cross_straight")
    policy = CategoricalMLP(18, 3, hidden=(8,))  # 2 cars x (7 kinematic + 2 conflict features)
    st = fit_input_norm(scenario, policy, n_tasks=20, seed=1)
    assert st.mean.shape == (18,)
    assert (st.std < 0.5).any(), "some normalised features vary by less than 0.5 and get amplified"
    with pytest.raises(ValueError, match="positive"):
        Standardize(torch.zeros(2), torch.zeros(2))
