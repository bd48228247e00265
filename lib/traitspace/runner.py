"""Run the numbered notebooks in order under papermill, into outputs/<run>/notebooks/.

The params file is validated before any notebook starts. Each notebook receives two papermill
parameters, ``params_path`` and ``overrides``, and reads everything else through
:func:`traitspace.core.config.load_config`. Notebooks run with the project root as working directory,
and ``params_path`` is passed relative to that root when the file lies inside it, so an executed copy
reopened in JupyterLab (whose kernel starts in ``outputs/<run>/notebooks/``) finds the same files
(relative paths resolve against the project root: :mod:`traitspace.core.paths`). Widget state is
stored in each executed copy, so an interactive output shows its last view without a kernel, and the
copy is signed as trusted in the user's Jupyter notebook database (the user's own run produced its
outputs; JupyterLab renders an untrusted notebook's widgets as plain text). The first failing notebook
stops the run; its failing cell's error is shown. ``outputs/<run>/manifest.json`` records the resolved
params, package versions, the git commit and each notebook's status and time.

Before any notebook starts, every hub id the params name is checked (:mod:`traitspace.core.hub`), so a
typo, a machine without network or a gated model fails at once with what to do. While a notebook runs,
a progress bar counts its code cells done of total and shows, after the bar, the running cell's own
tqdm bar (read from the widget messages ``tqdm.auto`` sends from the kernel).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .core import paths
from .core.artifacts import atomic_write_json, provenance, read_json
from .core.config import load_config
from .core.hub import check_config_hub_models

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COUNTS = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "n/total [elapsed<remaining" in a bar's text
_ELAPSED = re.compile(r"\[\d+:\d\d")  # tqdm's "[elapsed": "[00:03<00:10, 2.1it/s]" or "[00:03, 2.1it/s]"


class NotebookFailed(RuntimeError):
    def __init__(self, notebook: str, output: Path, cell_index: int | None, error: str):
        self.notebook, self.output, self.cell_index, self.error = notebook, output, cell_index, error
        super().__init__(f"notebook {notebook} failed at cell {cell_index}; executed copy: {output}\n{error}")


@dataclass(frozen=True)
class NotebookResult:
    name: str
    status: str
    seconds: float
    output: str


def discover_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Numbered notebooks (``NN_name.ipynb``) in run order."""
    return sorted(path for path in directory.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(notebooks: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    """Keep notebooks whose number or name is in ``only`` (e.g. ["00", "02_extract_traits"])."""
    if not only:
        return list(notebooks)
    wanted = set(only)
    chosen = [path for path in notebooks if path.stem[:2] in wanted or path.stem in wanted]
    unknown = wanted - {path.stem[:2] for path in chosen} - {path.stem for path in chosen}
    if unknown:
        raise ValueError(f"no notebook matches {sorted(unknown)}; available: {[path.stem for path in notebooks]}")
    return chosen


def _trust(notebook_path: Path) -> None:
    """Sign an executed copy as trusted, what ``jupyter trust`` does; a database that cannot be written
    costs only the rendering of its widgets, not the run."""
    import sqlite3

    import nbformat
    from nbformat.sign import NotebookNotary

    try:
        NotebookNotary().sign(nbformat.read(notebook_path, as_version=4))
    except (OSError, sqlite3.Error) as error:
        print(f"[traitspace] could not mark {notebook_path.name} as trusted ({error}); its widgets show as text "
              f"until `jupyter trust {notebook_path}`", flush=True)


class NotebookProgress:
    """One notebook's progress on the console: a tqdm bar over its code cells, with the running cell's
    own tqdm bar (its description, counts and rate) shown after it. ``cell_done`` is nbclient's
    ``on_cell_executed`` hook; ``inner`` receives the text of a kernel-side bar."""

    def __init__(self, name: str, total_cells: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_cells, desc=name, unit="cell", disable=not enabled, dynamic_ncols=True)

    def cell_done(self, **_hook_arguments) -> None:
        self.bar.set_postfix_str("", refresh=False)
        self.bar.update(1)

    def inner(self, text: str) -> None:
        counts = _COUNTS.search(text)
        finished = counts is not None and counts.group(1) == counts.group(2)
        self.bar.set_postfix_str(text, refresh=finished)  # a finished inner bar is always shown
        self.bar.update(0)  # otherwise redraws at most every tqdm mininterval: a fast inner loop costs nothing

    def close(self) -> None:
        self.bar.close()


def _executable_cells(notebook_path: Path) -> int:
    """Code cells nbclient runs (it skips empty ones), plus the parameters cell papermill injects."""
    import nbformat

    cells = nbformat.read(notebook_path, as_version=4).cells
    return sum(cell.cell_type == "code" and bool(cell.source.strip()) for cell in cells) + 1


class _TqdmWidgets:
    """The text of tqdm.auto's notebook bars, rebuilt from the widget messages a kernel sends.

    tqdm draws a bar in a kernel as an HBox of three widgets: an HTML label (description and
    percentage), a progress bar and an HTML label (``n/total [elapsed<remaining, rate]``). The labels
    arrive as ``comm_open``/``comm_msg`` state updates; when a right label changes, both labels
    are reported together."""

    def __init__(self, report):
        self.report = report
        self.texts: dict[str, str] = {}
        self.label_of_right: dict[str, str] = {}  # right label's comm id -> left label's comm id

    def message(self, msg: dict) -> None:
        import html

        content = msg.get("content", {})
        state = content.get("data", {}).get("state") or {}
        comm_id = content.get("comm_id")
        children = state.get("children")
        if isinstance(children, list) and len(children) == 3 and all(isinstance(child, str) for child in children):
            left, _, right = (child.removeprefix("IPY_MODEL_") for child in children)
            self.label_of_right[right] = left
        if isinstance(state.get("value"), str):
            self.texts[comm_id] = html.unescape(state["value"]).replace("\u2007", " ").strip()
            left = self.label_of_right.get(comm_id)
            if left is not None and _ELAPSED.search(self.texts[comm_id]):  # a tqdm bar, not another 3-part box
                self.report(f"{self.texts.get(left, '')} {self.texts[comm_id]}".strip())


def _progress_engine():
    """papermill's nbclient engine with a client that passes widget messages to a NotebookProgress.

    Registered as a papermill engine (papermill's own extension point): the stock engine builds its
    client class itself, so this engine builds the subclass with the same arguments."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine

    class ProgressClient(PapermillNotebookClient):
        def __init__(self, nb_man, progress: NotebookProgress, **kwargs):
            super().__init__(nb_man, on_cell_executed=progress.cell_done, **kwargs)
            self.tqdm_widgets = _TqdmWidgets(progress.inner)

        def handle_comm_msg(self, outs, msg, cell_index):
            super().handle_comm_msg(outs, msg, cell_index)
            self.tqdm_widgets.message(msg)

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            import logging

            kwargs.pop("input_path", None)
            return ProgressClient(
                nb_man, kernel_name=kernel_name, timeout=execution_timeout, startup_timeout=start_timeout,
                log=logging.getLogger("papermill"), log_output=log_output, stdout_file=stdout_file,
                stderr_file=stderr_file, **kwargs,
            ).execute()

    return ProgressEngine


def _manifest_path(run_dir: Path) -> Path:
    return run_dir / "manifest.json"


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(_manifest_path(run_dir), manifest)


def run_notebooks(
    params_path: str | Path,
    only: Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    progress: bool = True,
) -> list[NotebookResult]:
    """Execute the selected notebooks in order; raise NotebookFailed at the first failure."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from papermill.engines import papermill_engines

    overrides = dict(overrides or {})
    config = load_config(params_path, overrides)  # bad params fail here, before any model loads
    check_config_hub_models(config)  # so does a hub id that cannot be loaded here
    papermill_engines.register("traitspace-progress", _progress_engine())
    # --only wins; else the params' run.notebooks (the default params run the main job, 00-05); else all.
    notebooks = select_notebooks(discover_notebooks(notebook_dir), only or config.run.notebooks)
    root = paths.project_root()
    params_file = Path(config.params_path)
    passed_params = params_file.relative_to(root) if params_file.is_relative_to(root) else params_file
    run_dir = config.run_dir
    executed_dir = run_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)

    previous = read_json(_manifest_path(run_dir)) if _manifest_path(run_dir).is_file() else {}
    manifest = {
        "params_path": str(params_file),
        "overrides": overrides,
        "params": config.resolved(),
        "params_hash": config.params_hash(),
        **provenance(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notebooks": previous.get("notebooks", {}) if previous.get("params_hash") == config.params_hash() else {},
    }
    results = []
    for notebook in notebooks:
        output = executed_dir / notebook.name
        manifest["notebooks"][notebook.stem] = {"status": "running", "output": str(output)}
        _write_manifest(run_dir, manifest)
        started = time.perf_counter()
        cells = NotebookProgress(notebook.stem, _executable_cells(notebook), enabled=progress)
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters={"params_path": passed_params.as_posix(), "overrides": overrides},
                cwd=str(root),
                kernel_name="python3",
                engine_name="traitspace-progress",
                progress=cells,
                store_widget_state=True,  # nbclient's default, relied on: executed copies keep their widgets
                progress_bar=False,  # the NotebookProgress bar above counts the cells instead
                log_output=False,
            )
        except PapermillExecutionError as error:
            _trust(output)
            seconds = round(time.perf_counter() - started, 2)
            message = _ANSI.sub("", "\n".join(error.traceback)) if error.traceback else f"{error.ename}: {error.evalue}"
            manifest["notebooks"][notebook.stem] = {
                "status": "failed", "seconds": seconds, "output": str(output),
                "cell_index": error.cell_index, "error": f"{error.ename}: {error.evalue}",
            }
            manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_manifest(run_dir, manifest)
            raise NotebookFailed(notebook.stem, output, error.cell_index, message) from None
        finally:
            cells.close()
        _trust(output)
        seconds = round(time.perf_counter() - started, 2)
        manifest["notebooks"][notebook.stem] = {"status": "ok", "seconds": seconds, "output": str(output)}
        _write_manifest(run_dir, manifest)
        results.append(NotebookResult(notebook.stem, "ok", seconds, str(output)))
        if progress:
            shown = output.relative_to(root) if output.is_relative_to(root) else output
            print(f"[traitspace] {notebook.stem} ok in {seconds:.1f} s -> {shown}", flush=True)
    manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_manifest(run_dir, manifest)
    return results


def sync_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write each ``notebooks/NN_*.py`` (jupytext percent format, the reviewable source) to its
    ``.ipynb`` twin, without outputs. Returns the notebooks that changed."""
    import nbformat

    changed = []
    for source in sorted(notebook_dir.glob("[0-9][0-9]_*.py")):
        notebook = notebook_from_source(source)
        target = source.with_suffix(".ipynb")
        text = nbformat.writes(notebook) + "\n"
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            changed.append(target)
    return changed


def notebook_from_source(source: Path):
    import jupytext

    notebook = jupytext.read(source)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"  # stable ids: regenerating a notebook gives no spurious diff
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.metadata.pop("jupytext", None)
    return notebook
