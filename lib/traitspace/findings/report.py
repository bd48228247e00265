"""The findings report for writeups: :class:`Report`, one document built block by block (headings,
paragraphs, tables, figures) and written as Markdown and as a self-contained HTML file (figures
embedded), both atomically; and :func:`write_report`, which fills it with notebook 05's results.
Nothing here computes results.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.artifacts import atomic_write_text, provenance
from .evaluation import MonitorEvaluation
from .limitations import limitations
from .seed_level import seed_level_sentences, seed_level_tables
from .stage import monitor_figure, timing_figure
from .timing import timing_table

_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.5; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
code { background: #f5f5f5; padding: 0 0.2em; } pre { background: #f5f5f5; padding: 0.6em; overflow-x: auto; }
"""


def _inline_html(text: str) -> str:
    """Escape, then the few inline Markdown marks the report uses: **bold**, `code`, *italic*."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"(?<!\*)\*(?!\*)(.+?)(?<!\*)\*(?!\*)", r"<em>\1</em>", text)


@dataclass
class Report:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def text(self, paragraph: str) -> None:
        self.blocks.append(("text", paragraph.strip()))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, frame: pd.DataFrame, caption: str = "", digits: int = 3) -> None:
        """Floats are shown with ``digits`` significant digits (rounding to decimals would print the
        tiny drifts of a small model as 0)."""
        def show(value):
            return f"{value:.{digits}g}" if isinstance(value, float) else value

        self.blocks.append(("table", (frame.map(show) if len(frame) else frame, caption)))

    def figure(self, path: str | Path, caption: str = "") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"report figure not found: {path}")
        self.blocks.append(("figure", (path, caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    # -- rendering -----------------------------------------------------------------------------
    def to_markdown(self, base_dir: Path) -> str:
        lines = [f"# {self.title}", ""]
        for kind, content in self.blocks:
            if kind == "heading":
                level, text = content
                lines += ["#" * level + " " + text, ""]
            elif kind == "text":
                lines += [content, ""]
            elif kind == "bullets":
                lines += [f"- {item}" for item in content] + [""]
            elif kind == "table":
                frame, caption = content
                if caption:
                    lines += [f"*{caption}*", ""]
                lines += [frame.to_markdown(index=False) if len(frame) else "(no rows)", ""]
            elif kind == "figure":
                path, caption = content
                relative = Path(_relative(path, base_dir))
                lines += [f"![{caption}]({relative.as_posix()})", "", f"*{caption}*" if caption else "", ""]
            elif kind == "code":
                lines += ["```", content, "```", ""]
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 f"<style>{_HTML_STYLE}</style></head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, content in self.blocks:
            if kind == "heading":
                level, text = content
                parts.append(f"<h{level}>{_inline_html(text)}</h{level}>")
            elif kind == "text":
                parts.append(f"<p>{_inline_html(content)}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in content) + "</ul>")
            elif kind == "table":
                frame, caption = content
                caption_html = f"<caption>{_inline_html(caption)}</caption>" if caption else ""
                table_html = frame.to_html(index=False, border=0, na_rep="–") if len(frame) else "<p>(no rows)</p>"
                parts.append(re.sub(r"(<table[^>]*>)", lambda match: match.group(1) + caption_html, table_html, count=1))
            elif kind == "figure":
                path, caption = content
                encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
                             f"<figcaption>{_inline_html(caption)}</figcaption></figure>")
            elif kind == "code":
                parts.append(f"<pre>{html.escape(content)}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def write(self, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        markdown_path = atomic_write_text(out_dir / f"{stem}.md", self.to_markdown(out_dir))
        html_path = atomic_write_text(out_dir / f"{stem}.html", self.to_html())
        return markdown_path, html_path


def _relative(path: Path, base_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())


def _figure_caption(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}".replace("__", " · ").replace("_", " ")


def write_report(config, inputs, timings, monitor: MonitorEvaluation, spearman: pd.DataFrame, out_dir,
                 seed_timings: dict | None = None):
    """``findings/report.md`` and ``findings/report.html`` (``inputs``: :class:`~.inputs.FindingsInputs`;
    ``timings``: :func:`~.timing.fingerprint_and_behaviour`)."""
    out_dir = Path(out_dir)
    main = inputs.main
    report = Report(f"Trait-space findings: run '{config.run_name}'")
    conditions = sorted(main.projections["condition"].unique())
    report.text(f"Model `{config.model.source}`; conditions {', '.join(conditions)}; "
                f"{main.projections['step'].nunique()} checkpoints projected on "
                f"{main.projections['trait'].nunique()} directions; params hash `{config.params_hash()}`.")
    report.heading("What the EM data did, across training seeds")
    for sentence in seed_level_sentences(inputs.seed_level):
        report.text(sentence)
    for caption, table in seed_level_tables(inputs.seed_level, config.project.top_k).items():
        report.table(table, caption)
    report.heading("Lead time, matched tests across seeds")
    for timing in (seed_timings or {}).values():
        report.text(timing.sentence)
        if timing.testable:
            report.table(timing.per_seed, f"{timing.em} vs {timing.control}: per held-out seed")
    report.heading("Fingerprint and lead time within the first seed's runs (descriptive)")
    for (em, control), timing in timings.items():
        report.text(f"**{em} vs {control}.** {timing.sentence}")
        if timing_figure(out_dir, em).is_file():
            report.figure(timing_figure(out_dir, em), f"{em}: fingerprint (top) and EM rate (bottom)")
    report.table(timing_table(timings), "Fingerprint and behaviour crossings")
    for (em, control), decomposition in sorted(main.decomposition.items()):
        report.table(decomposition.tail(1), f"decomposition__{em}: shared vs specific drift at the final step")
    report.heading("Behaviour")
    shown_columns = [column for column in ("condition", "step", "n_answers", "em_rate_of_all", "em_rate_of_all_low",
                                           "em_rate_of_all_high", "em_rate_of_coherent", "n_coherent", "coherence_rate")
                     if column in main.rates]
    report.table(main.rates[shown_columns], "EM rate per checkpoint: of all answers (model-organisms convention) and "
                 "of coherent answers (EM-paper convention), training seed 0; 95% intervals by a cluster bootstrap over "
                 "questions where a question has several answers (formats, samples), else Wilson")
    if inputs.judge_validity is not None:
        report.table(inputs.judge_validity, "Judge validity on the held-out labelled answers")
    report.heading("Monitor")
    report.text(monitor.description)
    report.table(monitor.results.drop(columns=["undefined"]),
                 "Monitors and baselines on held-out datasets (held_out: dataset) and held-out seeds (held_out: seed)")
    if monitor_figure(out_dir).is_file():
        report.figure(monitor_figure(out_dir), "Monitor AUROC with 95% intervals")
    if len(spearman):
        report.table(spearman.sort_values("p_value").head(15), "Strongest trait-behaviour Spearman correlations "
                     "(q: BH over all tests; partial: controlling for the training step)")
    report.heading("Figures from notebooks 00-04")
    for path in inputs.figures:
        report.figure(path, _figure_caption(path))
    report.heading("Limitations")
    report.bullets(limitations(inputs, timings, monitor))
    report.heading("Parameters and provenance")
    report.code(json.dumps({"params": config.resolved(), **provenance()}, indent=2, default=str))
    return report.write(out_dir)
