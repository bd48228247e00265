"""What the diff says: pure functions over the per-checkpoint feature tables (no model, no I/O).

- :func:`changes_from_base`: each trained checkpoint's feature statistics minus the base model's;
- :func:`em_minus_control`: per feature, the EM-minus-control change at each run's final measured
  checkpoint, tested across training seeds against the seed-pair null
  (:func:`traitspace.core.seed_tests.seed_differential_test`: t interval across seeds, BH over features);
- :func:`top_features`: the features with the largest |EM-minus-control| change;
- :func:`direction_cosines`: decoder directions against trait vectors and the EM direction, with the
  |cosine| a random direction reaches by chance;
- :func:`top_answers`: the answers on which a feature fires most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.seed_tests import seed_differential_test

MEASURES = ("mean_activation", "frequency")


def changes_from_base(stats: pd.DataFrame) -> pd.DataFrame:
    """``stats`` (condition, seed, step, feature, mean_activation, frequency; step 0 = base) ->
    the trained rows with ``<measure>_change`` columns (checkpoint minus base, per feature)."""
    base = stats[stats["step"] == 0].drop_duplicates("feature").set_index("feature")
    if base.empty:
        raise ValueError("changes_from_base: no base-model (step 0) rows")
    trained = stats[stats["step"] > 0].copy()
    for measure in MEASURES:
        trained[f"{measure}_change"] = trained[measure].to_numpy() - base[measure].reindex(trained["feature"]).to_numpy()
    return trained.reset_index(drop=True)


def final_rows(changes: pd.DataFrame) -> pd.DataFrame:
    """Each (condition, seed) run's rows at its last measured step."""
    last = changes.groupby(["condition", "seed"])["step"].transform("max")
    return changes[changes["step"] == last]


def em_minus_control(changes: pd.DataFrame, em: str, control: str, measure: str = "mean_activation",
                     alpha: float = 0.05) -> pd.DataFrame:
    """Per feature: EM-minus-control ``<measure>_change`` at each run's final step, across seeds.

    Columns: feature, em_change, control_change (means over seeds), differential, ci_low, ci_high
    (t interval across seeds), seed_pair_sd, t, p_value, q_value, significant, n_em_seeds,
    n_control_seeds; sorted by |differential|. With one seed per condition p and the interval are NaN.
    """
    final = final_rows(changes)
    column = f"{measure}_change"

    def matrix(condition: str) -> pd.DataFrame:
        rows = final[final["condition"] == condition]
        if rows.empty:
            raise ValueError(f"em_minus_control: no measured checkpoint of {condition!r}")
        return rows.pivot(index="seed", columns="feature", values=column).sort_index()

    em_matrix, control_matrix = matrix(em), matrix(control)
    control_matrix = control_matrix.reindex(columns=em_matrix.columns)
    tested = seed_differential_test(em_matrix.to_numpy(), control_matrix.to_numpy(), alpha=alpha)
    table = pd.DataFrame({"feature": em_matrix.columns.to_numpy(), "measure": measure,
                          "em_change": em_matrix.mean().to_numpy(), "control_change": control_matrix.mean().to_numpy(),
                          **tested, "n_em_seeds": len(em_matrix), "n_control_seeds": len(control_matrix)})
    order = table["differential"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)


def top_features(tested: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` features with the largest |differential| (``tested`` is sorted so), with the sign
    EM moved them (+1: EM raised the feature more than the control did)."""
    top = tested.head(n).copy()
    top["sign"] = np.where(top["differential"] >= 0, 1, -1)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    return top.reset_index(drop=True)


def chance_abs_cosine(dimension: int, level: float = 0.95) -> float:
    """The |cosine| a random unit direction exceeds with probability 1 - level against a fixed one in
    ``dimension`` dimensions (exact: the squared cosine is Beta(1/2, (d-1)/2))."""
    from scipy import stats

    return float(np.sqrt(stats.beta.ppf(level, 0.5, (dimension - 1) / 2)))


def direction_cosines(directions: Mapping[int, torch.Tensor], references: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Signed cosine of each feature's decoder direction (feature -> ``[H]``) with each reference
    (name -> ``[H]``: trait unit vectors, the EM direction). Long table: feature, reference, cosine."""
    names = list(references)
    if not names or not directions:
        return pd.DataFrame(columns=["feature", "reference", "cosine"])
    matrix = torch.stack([torch.as_tensor(references[name]).float() for name in names])
    matrix = matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = []
    for feature, direction in directions.items():
        unit = torch.as_tensor(direction).float()
        cosines = (matrix @ (unit / unit.norm().clamp_min(1e-12))).numpy()
        rows.extend({"feature": int(feature), "reference": name, "cosine": float(value)} for name, value in zip(names, cosines))
    return pd.DataFrame(rows)


def closest_references(cosines: pd.DataFrame, n: int = 3, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Per feature, the ``n`` references with the largest |cosine| (``exclude``: left out, e.g. the EM
    direction, shown in its own column): feature, closest (``"name (+0.31)"`` strings joined by ``; ``)."""
    kept = cosines[~cosines["reference"].isin(exclude)]
    rows = []
    for feature, group in kept.groupby("feature", sort=False):
        best = group.reindex(group["cosine"].abs().sort_values(ascending=False).index).head(n)
        rows.append({"feature": feature, "closest": "; ".join(f"{name} ({value:+.2f})" for name, value
                                                                  in zip(best["reference"], best["cosine"]))})
    return pd.DataFrame(rows, columns=["feature", "closest"])


def top_answers(per_answer_max: Mapping[tuple, torch.Tensor], answers: Mapping[tuple, pd.DataFrame],
                features: Sequence[int], n: int) -> pd.DataFrame:
    """For each feature, the ``n`` answers (over the given checkpoints) with the highest maximum
    activation. ``per_answer_max``: checkpoint key (condition, seed, step) -> ``[answers, d_sae]``;
    ``answers``: the same key -> the answers table (rows in the same order: question, answer)."""
    rows = []
    for feature in features:
        candidates = []
        for key, matrix in per_answer_max.items():
            values = matrix[:, int(feature)].numpy()
            table = answers[key]
            candidates.extend((float(values[row]), key, table.iloc[row]) for row in range(len(table)))
        candidates.sort(key=lambda item: -item[0])
        seen: set[str] = set()
        for value, key, answer in candidates:
            if len(seen) >= n:
                break
            text = f"{answer['question']}\n{answer['answer']}"
            if text in seen:  # the base answers are read at every checkpoint: show each text once
                continue
            seen.add(text)
            rows.append({"feature": int(feature), "max_activation": value, "condition": key[0], "seed": key[1],
                         "step": key[2], "question": answer["question"], "answer": answer["answer"]})
    return pd.DataFrame(rows, columns=["feature", "max_activation", "condition", "seed", "step", "question", "answer"])
