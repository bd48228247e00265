"""The writeup report: Markdown and self-contained HTML with the same content."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from traitspace.findings.report import Report


def test_report_writes_markdown_and_html_with_figures_and_tables(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    figure_path = tmp_path / "figures" / "line.png"
    figure_path.parent.mkdir()
    fig.savefig(figure_path)
    report = Report("Findings")
    report.heading("Lead time")
    report.text("The fingerprint crossed at **step 8**; behaviour at `step 12`.")
    report.table(pd.DataFrame({"metric": ["AUROC"], "value": [0.91234]}), caption="Monitor <validity>")
    report.figure(figure_path, caption="A line")
    report.bullets(["the judge is weak"])
    markdown_path, html_path = report.write(tmp_path / "findings")
    markdown = markdown_path.read_text()
    assert "## Lead time" in markdown and "| AUROC" in markdown and "0.912" in markdown and "0.91234" not in markdown
    assert "](../figures/line.png)" in markdown
    page = html_path.read_text()
    assert "<strong>step 8</strong>" in page and "<code>step 12</code>" in page
    assert "data:image/png;base64," in page and "Monitor &lt;validity&gt;" in page
    assert "<li>the judge is weak</li>" in page


def test_missing_figure_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        Report("x").figure(tmp_path / "nope.png")
