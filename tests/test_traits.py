"""traits.py maths on synthetic activations with known answers."""

import numpy as np
import pandas as pd
import pytest

from traitspace.core import traits

L, H = 6, 16


def _noise(rng, n):
    return rng.normal(size=(n, L, H))


def test_mean_difference_is_difference_of_means():
    positive = np.arange(2 * L * H, dtype=float).reshape(2, L, H)
    negative = np.ones((3, L, H))
    expected = positive.mean(axis=0) - 1.0
    np.testing.assert_allclose(traits.mean_difference(positive, negative), expected)


def test_planted_direction_is_recovered():
    rng = np.random.default_rng(0)
    planted = rng.normal(size=H)
    planted /= np.linalg.norm(planted)
    positive = _noise(rng, 400) + 2.0 * planted
    negative = _noise(rng, 400) - 2.0 * planted
    direction = traits.mean_difference(positive, negative)  # [L, H]
    assert direction.shape == (L, H)
    cosines = traits.cosine_with(direction, planted)
    assert np.all(cosines > 0.97)
    # The raw difference keeps the scale: |mean(+) - mean(-)| is about 4 along the planted axis.
    assert np.allclose(traits.project(direction, planted), 4.0, atol=0.3)


def test_projection_sign_and_scale():
    unit = np.zeros(H)
    unit[3] = 1.0
    orthogonal = np.zeros(H)
    orthogonal[5] = 7.0
    activation = 3.0 * unit + orthogonal
    # Scale of the direction does not matter; its sign does.
    assert traits.project(activation, 10 * unit) == pytest.approx(3.0)
    assert traits.project(activation, -unit) == pytest.approx(-3.0)
    assert traits.project(-activation, unit) == pytest.approx(-3.0)
    # Layered layout: activation at layer l against the direction at layer l.
    activations = np.stack([activation * (layer + 1) for layer in range(L)])[None]  # [1, L, H]
    directions = np.tile(unit, (L, 1))
    np.testing.assert_allclose(traits.project(activations, directions), [[3.0 * (layer + 1) for layer in range(L)]])
    with pytest.raises(ValueError, match="do not end with"):
        traits.project(np.zeros((2, H)), directions)


def test_assistant_axis_weighs_each_role_once():
    default = np.full((2, L, H), 5.0)
    many_prompts_role = np.full((9, L, H), 1.0)
    one_prompt_role = np.full((1, L, H), 3.0)
    axis = traits.assistant_axis(default, [many_prompts_role, one_prompt_role])
    # mean of role means = (1 + 3) / 2 = 2, not the pooled mean (9*1 + 3) / 10 = 1.2
    np.testing.assert_allclose(axis, np.full((L, H), 3.0))
    # Default activations project higher on the axis than role activations.
    assert np.all(traits.project(default, axis) > traits.project(many_prompts_role[:2], axis))
    with pytest.raises(ValueError, match="at least one role"):
        traits.assistant_axis(default, [])


def test_layer_separation_perfect_and_chance():
    positive = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    negative = np.array([[-1.0, 1.0], [-2.0, 0.0], [-3.0, 1.0]])
    table = traits.layer_separation(positive, negative)
    assert list(table["layer"]) == [0, 1]
    assert table.loc[0, "auroc"] == 1.0 and table.loc[0, "cohens_d"] > 2
    assert table.loc[1, "auroc"] == pytest.approx(1 / 3)  # negatives slightly higher here
    assert table.loc[0, "mean_gap"] == pytest.approx(4.0)


def test_heldout_selection_picks_the_planted_layer():
    rng = np.random.default_rng(1)
    planted_layer = 4
    signal = np.zeros((L, H))
    signal[planted_layer, 0] = 1.5  # only this layer carries the trait
    signal[1, 0] = 0.3  # a weak echo elsewhere
    positive = _noise(rng, 60) + signal
    negative = _noise(rng, 60) - signal
    fit = np.arange(60) < 40
    # Fit on the first 40 of each side, measure separation on the other 20 (as extraction does).
    direction = traits.mean_difference(positive[fit], negative[fit])
    separation = traits.layer_separation(traits.project(positive[~fit], direction),
                                         traits.project(negative[~fit], direction))
    assert direction.shape == (L, H)
    assert separation.shape[0] == L
    assert traits.select_layer(separation, "heldout", L) == planted_layer
    assert traits.select_layer(separation, "middle", L) == L // 2
    assert traits.select_layer(separation, 2, L) == 2
    assert traits.select_layer(separation, -1, L) == L - 1
    with pytest.raises(ValueError, match="out of range"):
        traits.select_layer(separation, L, L)


def test_select_layer_breaks_auroc_ties_by_cohens_d_and_averages_traits():
    table = pd.DataFrame({"layer": [0, 1, 2], "auroc": [1.0, 1.0, 0.9], "cohens_d": [2.0, 5.0, 9.0]})
    assert traits.select_layer(table, "heldout", 3) == 1
    table_nan = table.assign(cohens_d=[2.0, np.nan, 9.0])
    assert traits.select_layer(table_nan, "heldout", 3) == 0
    # Two traits stacked: layer 2 is best on average although trait a prefers layer 0.
    stacked = pd.DataFrame({
        "trait": ["a"] * 3 + ["b"] * 3, "layer": [0, 1, 2] * 2,
        "auroc": [1.0, 0.7, 0.95, 0.5, 0.6, 1.0], "cohens_d": [3.0, 1.0, 2.5, 0.0, 0.5, 4.0],
    })
    assert traits.select_layer(stacked, "heldout", 3) == 2


def test_split_heldout_is_disjoint_deterministic_and_clamped():
    fit, heldout = traits.split_heldout(9, 1 / 3, seed=3)
    assert len(heldout) == 3 and len(fit) == 6
    assert set(fit).isdisjoint(heldout) and set(fit) | set(heldout) == set(range(9))
    again = traits.split_heldout(9, 1 / 3, seed=3)
    assert np.array_equal(fit, again[0]) and np.array_equal(heldout, again[1])
    assert len(traits.split_heldout(2, 0.01, seed=0)[1]) == 1  # at least one held out
    assert len(traits.split_heldout(2, 0.99, seed=0)[0]) == 1  # at least one kept
    with pytest.raises(ValueError):
        traits.split_heldout(1, 0.5, seed=0)


def test_unit_vectors_cosines_and_separates():
    with pytest.raises(ValueError, match="zero vector"):
        traits.unit_vectors(np.zeros((2, H)))
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    cosines = traits.cosine_matrix(vectors)
    np.testing.assert_allclose(cosines, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(traits.unit_vectors(vectors), axis=-1), 1.0)
    assert traits.separates(0.8, 0.8) and not traits.separates(0.79, 0.8)
    assert not traits.separates(float("nan"), 0.5)


def test_vectorised_separation_matches_stats_module():
    from traitspace.core.stats import auroc, cohens_d

    rng = np.random.default_rng(2)
    positive = rng.integers(0, 4, size=(7, 5)).astype(float)  # small integers: many ties
    negative = rng.integers(0, 4, size=(5, 5)).astype(float)
    positive[:, 4] = 2.0  # a column without spread on one side
    negative[:, 4] = 2.0
    table = traits.layer_separation(positive, negative)
    for layer in range(5):
        assert table.loc[layer, "auroc"] == pytest.approx(auroc(positive[:, layer], negative[:, layer]))
        expected_d = cohens_d(positive[:, layer], negative[:, layer])
        if np.isnan(expected_d):
            assert np.isnan(table.loc[layer, "cohens_d"])
        else:
            assert table.loc[layer, "cohens_d"] == pytest.approx(expected_d)
    assert np.isnan(traits.cohens_d_by_column(positive[:1], negative)).all()
    assert np.isnan(traits.auroc_by_column(positive[:0], negative)).all()
