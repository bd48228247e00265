"""An interactive browser of any trait's trajectory (ipywidgets), for exploring beyond the report."""

from __future__ import annotations

import pandas as pd


def trait_explorer(projections: pd.DataFrame):
    """An ipywidgets browser of any trait's trajectory for any conditions (mean ± 95% CI over prompts)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import seaborn as sns

    traits = sorted(projections["trait"].unique())
    conditions = sorted(projections["condition"].unique())
    trait_box = widgets.Dropdown(options=traits, value=traits[0], description="trait")
    condition_box = widgets.SelectMultiple(options=conditions, value=tuple(conditions), description="conditions")

    def draw(trait, chosen):
        rows = projections[(projections["trait"] == trait) & projections["condition"].isin(chosen)]
        fig, ax = plt.subplots(figsize=(7, 3.8))
        sns.lineplot(data=rows, x="step", y="value", hue="condition", marker="o", errorbar=("ci", 95), ax=ax)
        ax.set(title=f"{trait}: projection over training", xlabel="training step", ylabel="projection (mean, 95% CI)")
        plt.show()

    return widgets.interactive(draw, trait=trait_box, chosen=condition_box)
