"""The workbook as a user meets it: JupyterLab in a real browser (Debian's Chromium, driven by
Playwright) on the executed notebooks of a finished smoke run.

A smoke run is made through the runner (``outputs/browser-test/``, replaced each time), JupyterLab is
started on 127.0.0.1 with a token, and Chromium opens the run's executed copies, whose kernels start
in ``outputs/browser-test/notebooks/``, not the project root. Notebook 05 must show the explorer from
its stored widget state before anything runs, then Run All without an error, and its explorer must
draw a new plot when the trait, the conditions and the checkpoint change; every other numbered
notebook must Run All. Screenshots are saved under ``outputs/browser-test/screenshots/``.

Skipped, with the reason, where Chromium or Playwright is missing; ``.ci/run`` installs both and sets
``TRAITSPACE_REQUIRE_BROWSER=1``, which turns the skip into a failure. While working on the test,
``TRAITSPACE_BROWSER_RUN=outputs/<run>`` reuses a finished run instead of making one.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from traitspace.runner import REPO_ROOT, discover_notebooks, run_notebooks

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the `browser` extra is not installed
    sync_playwright = None

RUN_NAME = "browser-test"
CHROMIUM = os.environ.get("TRAITSPACE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOK_TIMEOUT_MS = 600_000  # one notebook's Run All on the smoke run; a bound, not an expectation
SETTINGS = {  # JupyterLab user settings for the test's own settings folder
    # Every cell in the DOM (no virtual scrolling), so any output can be located and checked.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    # The executed copies stay as the runner wrote them.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
    # No request leaves the machine.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false", "checkForUpdates": false}',
}


def _missing() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[browser]'; make test installs it)"
    if not CHROMIUM:
        return "no chromium executable on PATH (apt-get install chromium; .ci/run installs it)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.notebooks, pytest.mark.timeout(1800)]
if _missing():
    if os.environ.get("TRAITSPACE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"TRAITSPACE_REQUIRE_BROWSER=1 but {_missing()}")
    pytestmark.append(pytest.mark.skip(reason=_missing()))


@pytest.fixture(scope="module")
def run_dir() -> Path:
    """A finished smoke run made from scratch through the runner, as `make run` makes one (the folder
    is replaced first, so nothing cached by an older version of the code is reused)."""
    from traitspace.core import paths

    if os.environ.get("TRAITSPACE_BROWSER_RUN"):  # a finished run's folder, reused while working on this test
        return Path(os.environ["TRAITSPACE_BROWSER_RUN"]).resolve()
    shutil.rmtree(paths.project_root() / "outputs" / RUN_NAME, ignore_errors=True)
    # One training seed: the browser checks what a user sees and does; the statistics across seeds are
    # checked by test_notebooks.py on the smoke params' three seeds, which would triple this run's time.
    overrides = {"run.name": RUN_NAME, "finetune.seeds": [0]}
    results = run_notebooks(REPO_ROOT / "params" / "smoke.yaml", overrides=overrides, progress=False)
    folder = Path(results[0].output).parents[1]
    assert folder.name == RUN_NAME
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (a free port, a token), its settings and workspaces in a temp folder."""
    from traitspace.core import paths

    home = tmp_path_factory.mktemp("lab")
    for name, text in SETTINGS.items():
        (home / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / name).write_text(text)
    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    server = subprocess.Popen(
        # `-m jupyterlab`, not `-m jupyter lab`: the latter runs the server as a child that outlives it.
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={paths.project_root()}",
         # window.jupyterapp: the page's own command registry, which the Run menu calls.
         "--LabApp.expose_app_in_browser=True", "--allow-root"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    lines: queue.Queue = queue.Queue()

    def drain():
        for line in server.stdout:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        url = None
        while url is None:  # the server prints its URL once it serves
            line = lines.get(timeout=180)
            if line is None:
                raise RuntimeError("JupyterLab exited before serving:\n" + "".join(log[-40:]))
            found = re.search(r"(http://127\.0\.0\.1:\d+)/lab", line)
            url = found.group(1) if found else None
        yield {"url": url, "token": token, "log": log}
    finally:
        server.terminate()  # it shuts its kernels down first
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def shots(run_dir) -> Path:
    folder = run_dir / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(lab):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        yield page
        browser.close()


OPEN = """async (path) => {
  const app = window.jupyterapp;
  for (const widget of Array.from(app.shell.widgets('main'))) {  // one notebook (and kernel) at a time
    if (widget.sessionContext) { await widget.sessionContext.shutdown(); }
    widget.dispose();
  }
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  app.shell.activateById(panel.id);
}"""

RUN_ALL = """async () => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const ok = await app.commands.execute('notebook:run-all-cells');
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') { return; }
    const errors = cell.model.outputs.toJSON().filter(output => output.output_type === 'error')
      .map(output => `${output.ename}: ${output.evalue}`);
    cells.push({index, count: cell.model.executionCount, errors});
  });
  return {ok, cells};
}"""


def _open(page, lab, path: Path) -> None:
    from traitspace.core import paths

    relative = path.relative_to(paths.project_root()).as_posix()
    if "/lab" not in page.url:
        page.goto(f"{lab['url']}/lab?token={lab['token']}&reset")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell")
        page.evaluate("async () => { await window.jupyterapp.restored; }")
    page.evaluate(OPEN, relative)


def _run_all(page, shots: Path, name: str) -> None:
    report = page.evaluate(RUN_ALL)
    errors = [f"cell {cell['index']}: {error}" for cell in report["cells"] for error in cell["errors"]]
    not_run = [cell["index"] for cell in report["cells"] if cell["count"] is None]
    page.screenshot(path=str(shots / f"{name}_run_all.png"))
    assert not errors, f"{name}: Run All raised\n" + "\n".join(errors)
    assert report["ok"] and not not_run, f"{name}: Run All stopped; cells never run: {not_run}"


def _explorer_image(page) -> str:
    image = page.locator(".ts-explorer .ts-explorer-plot img").last
    image.wait_for()
    return image.get_attribute("src")


IDLE = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"


def _change(page, shots: Path, name: str, before: str, action) -> str:
    """Do ``action`` on the explorer once the kernel is idle, and wait for a plot other than ``before``;
    on a timeout the failure shows what the explorer displays (a traceback, say) and a screenshot."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(IDLE)
    action()
    try:
        page.wait_for_function(
            """(before) => { const images = document.querySelectorAll('.ts-explorer .ts-explorer-plot img');
                             const image = images[images.length - 1];
                             return image && image.src && image.src !== before; }""", arg=before)
    except PlaywrightTimeout:
        page.screenshot(path=str(shots / f"05_explorer_{name}_FAILED.png"))
        shown = page.locator(".ts-explorer").last.inner_text()
        pytest.fail(f"the explorer's plot did not change after the {name}; it shows:\n{shown[-3000:]}")
    page.screenshot(path=str(shots / f"05_explorer_{name}_changed.png"))
    return _explorer_image(page)


def test_findings_notebook_shows_its_explorer_runs_all_and_the_explorer_responds(page, lab, run_dir, shots):
    _open(page, lab, run_dir / "notebooks" / "05_findings.ipynb")
    # Before anything runs: the explorer as the runner left it (stored widget state, trusted copy).
    stored = _explorer_image(page)
    page.locator(".ts-explorer").last.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "05_explorer_as_executed.png"))

    _run_all(page, shots, "05_findings")
    explorer = page.locator(".ts-explorer").last
    explorer.scroll_into_view_if_needed()
    first = _explorer_image(page)
    assert first and stored
    page.screenshot(path=str(shots / "05_explorer_default.png"))

    trait_box = explorer.locator(".ts-explorer-trait input")
    options = explorer.locator(".ts-explorer-trait datalist option")
    traits = [options.nth(index).get_attribute("value") for index in range(options.count())]
    other = next(trait for trait in traits if trait != trait_box.input_value())

    def search_trait():  # typed into the search box, committed with Enter
        trait_box.fill(other)
        trait_box.press("Enter")

    second = _change(page, shots, "trait", first, search_trait)
    conditions = explorer.locator(".ts-explorer-conditions select")
    names = [option.get_attribute("value") for option in conditions.locator("option").all()]
    third = _change(page, shots, "conditions", second, lambda: conditions.select_option(names[:1]))

    def first_checkpoint():
        explorer.locator(".ts-explorer-step .noUi-handle").first.focus()
        page.keyboard.press("Home")

    _change(page, shots, "step", third, first_checkpoint)
    assert explorer.locator(".ts-explorer-details").inner_text().strip()


@pytest.mark.parametrize("notebook", [path.name for path in discover_notebooks() if not path.name.startswith("05_")])
def test_every_other_notebook_runs_all_cells(page, lab, run_dir, shots, notebook):
    _open(page, lab, run_dir / "notebooks" / notebook)
    _run_all(page, shots, Path(notebook).stem)
