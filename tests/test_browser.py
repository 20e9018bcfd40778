"""The lab in a real browser: JupyterLab on a free local port, Debian's Chromium driven by Playwright.

Run it alone with `.venv/bin/python -m pytest tests/test_browser.py` (it needs `apt-get install chromium`
and Playwright from PyPI; make test installs both, or stops with the command to run). Under make test
(LABKIT_BROWSER_TEST=required) and in CI a missing browser fails the test, never skips it; elsewhere it
is skipped, saying so. Screenshots of a failing test go to test-screenshots/ in the repository.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labkit import capacity

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "test-screenshots"

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs it
    sync_playwright = PlaywrightTimeout = None

REQUIRED = os.environ.get("LABKIT_BROWSER_TEST") == "required" or os.environ.get("CI") == "true"
MISSING = " and ".join(what for what, there in (("Debian's chromium (sudo apt-get install chromium)", CHROMIUM),
                                                ("Playwright (pip install playwright)", sync_playwright)) if not there)
if MISSING and not REQUIRED:
    pytest.skip(f"the browser test needs {MISSING}; make test installs both (or stops with the command to run)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of the notebooks, with the ci profile and a results folder of its own."""
    if MISSING:
        pytest.fail(f"the browser test needs {MISSING}, and make test runs it: install it and run again (make test "
                    "installs both where it can)", pytrace=False)
    root = tmp_path_factory.mktemp("lab")
    for nb in ("01_mec_by_hand.ipynb", "02_train_vgg16.ipynb"):
        shutil.copy(ROOT / "notebooks" / nb, root)
    import nbformat

    from labkit import handouts

    student = handouts.student_copy(json.loads((ROOT / "notebooks" / "01_mec_by_hand.ipynb").read_text()))
    nbformat.write(student, str(root / "01_student.ipynb"))  # the copy make handouts gives a student
    settings = root / ".settings"
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the page
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}
                           }.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "LABKIT_PROFILE": "ci", "LABKIT_RESULTS": str(root / "results"),
           "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.open_browser=False",
                               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={root / '.ws'}",
                               "--allow-root"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    serving = threading.Event()

    def copy_log():  # the server's output into its log; `serving` is set by the line that says where it serves
        for line in server.stdout:
            log.write(line)
            log.flush()
            if f"127.0.0.1:{port}/lab" in line:
                serving.set()

    copier = threading.Thread(target=copy_log, daemon=True)
    copier.start()
    if not serving.wait(timeout=90):
        server.terminate()
        raise AssertionError("JupyterLab did not start: " + (root / "jupyterlab.log").read_text()[-2000:])
    home = root / ".browser-home"  # chromium's caches and settings stay in the test's folder
    browser_env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                   "XDG_CONFIG_HOME": str(home / ".config")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], env=browser_env)
        yield {"url": url, "token": token, "browser": browser, "root": root}
        browser.close()
    server.terminate()
    server.wait(timeout=30)
    copier.join(timeout=30)
    log.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def page(lab, request):
    context = lab["browser"].new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    if getattr(request.node, "failed", True):
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / f"{request.node.name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failure: {path}")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: D103 - marks a failed test for the page fixture
    outcome = yield
    if call.when == "call":
        item.failed = outcome.get_result().failed


def open_and_run_all(page, lab, name: str, timeout_s: float = 300) -> None:
    """Open `name` in a fresh workspace, run all its cells from the Run menu, wait until every cell ran."""
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    notebook_ = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
    notebook_.locator(".jp-CodeCell").first.wait_for(timeout=60_000)
    kernel_idle(page, timeout_s=120)  # the kernel has come up
    notebook_.click()
    page.keyboard.press("Escape")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=10_000)
    try:  # every code cell's prompt reads [n]: (ran), none [*]: (running or queued) or [ ]: (not run)
        page.wait_for_function("""() => {
            const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
                .filter(e => e.offsetParent !== null).map(e => e.innerText.trim());
            return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p));
        }""", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        prompts = notebook_.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        raise AssertionError(f"{name} did not finish running: prompts {prompts}") from None


def kernel_idle(page, timeout_s: float = 60) -> None:
    """Wait until the notebook's kernel says it is idle (its status message, shown by the toolbar's indicator)."""
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=timeout_s * 1000)


def _outputs_text(page) -> str:
    return "\n".join(page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output").all_inner_texts())


def test_notebook_01_sliders_start_at_the_widths_and_redraw_once(page, lab):
    open_and_run_all(page, lab, "01_mec_by_hand.ipynb")
    page.wait_for_selector(".widget-slider", timeout=30_000)
    readouts = page.eval_on_selector_all(".widget-slider .widget-readout", "els => els.map(e => e.innerText)")
    assert readouts == ["4096", "4096", "256"]
    explorer = page.locator(".widget-output").last
    assert "total 102,772,992 bits" in explorer.inner_text()
    assert explorer.locator("img").count() == 1
    before_src = explorer.locator("img").first.get_attribute("src")
    # count what the next change draws: tables, totals and figures added to the explorer's output
    page.evaluate("""() => {
        const out = [...document.querySelectorAll('.widget-output')].pop();
        window.__drawn = {img: 0, table: 0, total: 0};
        new MutationObserver(records => records.forEach(r => r.addedNodes.forEach(n => {
            if (!(n instanceof HTMLElement)) return;
            window.__drawn.img += n.matches('img') ? 1 : n.querySelectorAll('img').length;
            window.__drawn.table += n.matches('table') ? 1 : n.querySelectorAll('table').length;
            if (n.innerText && n.innerText.includes('total ')) window.__drawn.total += 1;
        }))).observe(out, {childList: true, subtree: true});
    }""")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    expected = f"total {capacity.mec([25088, 4097, 4096, 256, 10]):,} bits"
    page.wait_for_function(f"() => [...document.querySelectorAll('.widget-output')].pop().innerText"
                           f".includes('{expected}')", timeout=30_000)
    kernel_idle(page)  # the slider's callback has finished: a second redraw would have come before this
    drawn = page.evaluate("() => window.__drawn")
    assert drawn == {"img": 1, "table": 1, "total": 1}, drawn
    readouts = page.eval_on_selector_all(".widget-slider .widget-readout", "els => els.map(e => e.innerText)")
    assert readouts == ["4097", "4096", "256"]
    assert explorer.locator("img").count() == 1
    assert explorer.locator("img").first.get_attribute("src") != before_src


def test_notebook_02_runs_without_an_error(page, lab):
    open_and_run_all(page, lab, "02_train_vgg16.ipynb", timeout_s=600)
    panel = page.locator(".jp-NotebookPanel:visible")
    text = _outputs_text(page)
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
    assert panel.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
    assert "test accuracy" in text and panel.locator(".jp-OutputArea-output img").count() >= 4


def _cell_with(page, text: str):
    """The visible code cell whose source holds `text`."""
    return page.locator(".jp-NotebookPanel:visible .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=text)).first


def _answer_and_check(page, body: str, expect: str) -> str:
    """Replace the perceptron_bits exercise's cell with `body`, run it and the check below it, wait for the check
    to print `expect`; the check's text."""
    cell = _cell_with(page, "def perceptron_bits(inputs):")
    editor = cell.locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(body)  # typed key by key, as a student does
    page.keyboard.press("Shift+Enter")  # runs the exercise, selects the check
    page.keyboard.press("Shift+Enter")  # runs the check
    check = _cell_with(page, 'exercises.check("perceptron_bits", globals())')
    check.locator(".jp-OutputArea-output", has_text=expect).first.wait_for(timeout=60_000)
    kernel_idle(page)
    return "\n".join(check.locator(".jp-OutputArea-output").all_inner_texts())


def test_a_student_copy_runs_to_the_end_and_checks_a_typed_answer(page, lab):
    open_and_run_all(page, lab, "01_student.ipynb", timeout_s=300)
    text = _outputs_text(page)
    assert "Traceback" not in text and "perceptron_bits is not written yet" in text, text[-3000:]
    panel = page.locator(".jp-NotebookPanel:visible")
    assert panel.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
    # a wrong answer first: the check says what is wrong, on stderr (nbgrader scores that 0)
    said = _answer_and_check(page, "def perceptron_bits(inputs):\nreturn inputs", "the bias too")
    assert "the bias too" in said, said
    said = _answer_and_check(page, "def perceptron_bits(inputs):\nreturn inputs + 1", "check passed")
    assert "check passed" in said and "bias" not in said, said
