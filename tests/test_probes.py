"""The probe maths on synthetic activations: a planted direction is recovered (high grouped-CV AUROC,
probe and difference of means aligned with it, the right layer found, transfer where the direction is
shared); with no direction the grouped-CV AUROC stays near chance."""
from __future__ import annotations

import numpy as np
import pytest

from traitspace.consistency import probes

HIDDEN = 24


def _planted(seed: int, direction: np.ndarray | None, n_groups: int = 12, per_group: int = 6, strength: float = 3.0,
             group_offsets: float = 0.0, label_per_group: bool = False) -> probes.ProbeData:
    """Rows in groups (questions), labels alternating within each; label 1 adds ``strength`` x the unit
    ``direction``; each group shifted by its own random offset (what paraphrases share)."""
    rng = np.random.default_rng(seed)
    X, y, groups = [], [], []
    for group in range(n_groups):
        offset = rng.normal(0, group_offsets, HIDDEN)
        for row in range(per_group):
            label = row % 2
            vector = rng.normal(0, 1, HIDDEN) + offset
            if direction is not None:
                vector += strength * label * direction
            X.append(vector)
            y.append(label)
            groups.append(f"q{group}")
    return probes.ProbeData(np.array(X), np.array(y), np.array(groups))


@pytest.fixture(scope="module")
def unit():
    vector = np.random.default_rng(99).normal(size=HIDDEN)
    return vector / np.linalg.norm(vector)


def test_a_planted_direction_is_recovered(unit):
    data = _planted(0, unit)
    table = probes.evaluate(data, {"true direction": unit}, n_splits=4, n_boot=300).set_index("method")
    assert table.loc["probe", "auroc"] > 0.8 and table.loc["probe", "low"] > 0.6
    assert table.loc["mean_difference", "auroc"] > 0.8
    assert table.loc["probe", "n"] == 72 and table.loc["probe", "n_groups"] == 12
    assert table.loc["probe", "low"] <= table.loc["probe", "auroc"] <= table.loc["probe", "high"]
    assert probes.cosine(probes.probe_direction(data), unit) > 0.7
    assert probes.cosine(probes.mean_difference(data.X, data.y), unit) > 0.8


@pytest.mark.parametrize("seed", [1, 2])
def test_no_direction_gives_chance_under_grouped_cv(seed):
    # Each group (question) holds both labels, as the stage's pairs do, and carries its own offset.
    data = _planted(seed, None, n_groups=20, per_group=6, group_offsets=2.0)
    table = probes.evaluate(data, n_splits=5, n_boot=300).set_index("method")
    for method in ("probe", "mean_difference"):
        auroc, low, high = table.loc[method, ["auroc", "low", "high"]]
        assert abs(auroc - 0.5) < 0.15 and low < auroc < high, (method, auroc, low, high)


def test_the_layer_sweep_finds_the_planted_layer(unit):
    per_layer = {layer: _planted(layer + 10, unit if layer == 2 else None) for layer in range(4)}
    sweep = probes.layer_sweep(per_layer, {"true": {layer: unit for layer in range(4)}}, n_splits=4, n_boot=50)
    best = sweep[sweep["method"] == "probe"].sort_values("auroc").iloc[-1]
    assert best["layer"] == 2 and best["auroc"] > 0.8
    assert set(sweep["method"]) == {"probe", "mean_difference", "true"}


def test_transfer_holds_where_the_direction_is_shared(unit):
    other = np.roll(unit, 5)
    other -= other @ unit * unit
    other /= np.linalg.norm(other)
    datasets = {"a": _planted(2, unit), "b": _planted(3, unit), "c": _planted(4, other)}
    matrix = probes.transfer_matrix(datasets, n_splits=4).set_index(["train", "test"])["auroc"]
    assert matrix[("a", "b")] > 0.75 and matrix[("b", "a")] > 0.75 and matrix[("a", "a")] > 0.75
    assert 0.25 < matrix[("a", "c")] < 0.75 and 0.25 < matrix[("c", "a")] < 0.75
    assert len(matrix) == 9


def test_the_group_bootstrap_equals_resampling_rows_by_hand(unit):
    from sklearn.metrics import roc_auc_score

    data = _planted(6, unit, n_groups=5, per_group=4, strength=0.5)
    scores = data.X @ unit
    _, low, high = probes.grouped_auroc(data.y, scores, data.groups, n_boot=400, seed=3)
    rng = np.random.default_rng(3)
    groups = np.unique(data.groups)
    by_hand = []
    for draw in rng.integers(0, groups.size, size=(400, groups.size)):
        rows = np.concatenate([np.flatnonzero(data.groups == groups[g]) for g in draw])
        by_hand.append(roc_auc_score(data.y[rows], scores[rows]))
    assert (low, high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))


def test_cosine_table_and_a_single_group_is_refused(unit):
    table = probes.cosine_table({"x": unit, "y": -unit, "z": np.roll(unit, 1)})
    assert len(table) == 3 and table.iloc[0]["cosine"] == pytest.approx(-1.0)
    data = _planted(5, unit, n_groups=1)
    with pytest.raises(ValueError, match="at least 2 groups"):
        probes.out_of_fold_scores(data)
