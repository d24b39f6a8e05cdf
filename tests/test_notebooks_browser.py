"""The notebooks in a real browser: JupyterLab from the venv on 127.0.0.1, each notebook opened in headless
Chromium (Debian's chromium + chromium-driver, driven by selenium; setup.sh installs them), all cells run.

nbclient (tests/test_notebooks.py) proves the cells run; only a browser proves the ipywidgets views
render: a widget whose front end fails passes every headless test. Each notebook is run through
JupyterLab's own "run all" and saved; the saved file must hold no error output, the widgets' DOM must be
there, and moving the memmap explorer's window slider must redraw its figure. Screenshots go to the
test's tmp dir (printed; look at them).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the widget views each notebook shows, by a CSS selector of their DOM
WIDGETS = {
    "01-memory-map": [".widget-vbox .widget-dropdown select", ".widget-vbox .widget-slider .noUi-handle",
                      ".widget-vbox img.widget-image"],
    "02-load-a-crash-kernel": [".widget-vbox .widget-button", ".widget-text input", ".widget-vbox .widget-slider",
                               ".widget-vbox .widget-html pre"],
}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) "   # the open notebook (the ones before stay, hidden)
RUN_SECONDS = 1200          # a notebook's cells, read from the lab runs (kallsyms, dumps) under load

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_env() -> dict[str, str]:
    """The session's shared lab runs for the notebooks that read them (as tests/test_notebooks.py does),
    or the runs $KEXECFW_LAB_RESULTS already names (kept runs: no boot)."""
    if os.environ.get("KEXECFW_LAB_RESULTS"):
        return {"KEXECFW_LAB_RESULTS": os.environ["KEXECFW_LAB_RESULTS"]}
    from tests.labruns import shared_lab_run
    runs = [shared_lab_run(arch) for arch in ("arm64", "x86_64")]
    assert all(r.ok for r in runs), "\n".join(r.summary() for r in runs if not r.ok)
    return {"KEXECFW_LAB_RESULTS": os.pathsep.join(str(r.directory) for r in runs)}


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory, lab_env):
    """JupyterLab from the venv on 127.0.0.1 (a free port, a token), over a copy of notebooks/, with its
    own config, data and settings dirs; windowing off so every cell stays in the DOM."""
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.fail(f"{jupyter} is missing: run setup.sh (it installs the notebook extra, JupyterLab)")
    home = tmp_path_factory.mktemp("jupyterlab")
    root = home / "notebooks"
    shutil.copytree(REPO / "notebooks", root)
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = home / "settings" / "@jupyterlab" / "apputils-extension"       # no "get notified" toast
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, **lab_env, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    env.pop("MPLBACKEND", None)                      # the kernel's inline backend draws the figures
    log = open(home / "jupyterlab.log", "wb")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             "--LabApp.expose_app_in_browser=True", "--allow-root"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        import urllib.request
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: see {home / 'jupyterlab.log'}")
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "home": home}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run setup.sh (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _wait(what: str, check, seconds: float, poll: float = 1.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(poll)


def _command(driver, name: str) -> None:
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"window.jupyterapp.commands.execute({name!r}).then(() => done(true), e => done(String(e)));")


def _prompts(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
        ".jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim());")


def _open_and_run(driver, server: dict, path: Path, shots: Path) -> None:
    driver.get(f"{server['base']}/lab/tree/{path.name}?token={server['token']}")
    _wait("JupyterLab's app", lambda: driver.execute_script("return !!window.jupyterapp;"), 120)
    _wait(f"{path.name} open with its kernel idle", lambda: driver.execute_script(
        "const w = window.jupyterapp.shell.currentWidget;"
        "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        f"return !!(k && k.status === 'idle' && w.context.path.endsWith({path.name!r}));"), 180)
    _command(driver, "notebook:run-all-cells")
    # every code cell numbered, none running ([*]) or queued
    _wait(f"{path.name}'s cells to run", lambda: (lambda p: p and all(x.startswith("[") and x[1:-2].isdigit()
                                                                      for x in p))(_prompts(driver)),
          RUN_SECONDS, poll=3)
    _command(driver, "docmanager:save")
    _wait(f"{path.name} saved", lambda: not driver.execute_script(
        "return document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
        ".classList.contains('jp-mod-dirty');"), 60)
    driver.save_screenshot(str(shots / f"{path.stem}-end.png"))


def _errors(saved: Path) -> list[str]:
    nb = json.loads(saved.read_text())
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _element_shot(driver, selector: str, out: Path) -> None:
    from selenium.webdriver.common.by import By
    element = driver.find_elements(By.CSS_SELECTOR, selector)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(0.5)
    element.screenshot(str(out))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab_and_its_widgets_work(path, jupyterlab, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    shots = tmp_path
    _open_and_run(browser, jupyterlab, path, shots)
    saved = jupyterlab["root"] / path.name
    assert not _errors(saved), _errors(saved)
    nb = json.loads(saved.read_text())
    assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    # the figures were drawn in the page
    images = browser.find_elements(By.CSS_SELECTOR, PANEL + ".jp-OutputArea-output img")
    assert images, f"{path.name}: no figure in the page"
    for selector in WIDGETS.get(path.stem, []):
        assert browser.find_elements(By.CSS_SELECTOR, PANEL + selector), (
            f"{path.name}: no {selector!r} in the page; the widgets' DOM: "
            + "".join(e.get_attribute("outerHTML")[:3000] for e in browser.find_elements(
                By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets")[:1]))
    if path.stem == "01-memory-map":
        explorer = PANEL + ".jp-OutputArea-output > .widget-vbox"
        figure = f"{explorer} img.widget-image"
        _element_shot(browser, explorer, shots / "01-explorer-before.png")
        before = browser.find_elements(By.CSS_SELECTOR, figure)[0].get_attribute("src")
        handle = browser.find_elements(By.CSS_SELECTOR, f"{explorer} .widget-slider .noUi-handle-lower")[0]
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
        handle.click()
        for _ in range(3):                       # the window's lower edge, three region boundaries up
            handle.send_keys(Keys.ARROW_RIGHT)
            time.sleep(0.3)
        after = _wait("the explorer's figure to change", lambda: (lambda imgs: imgs and imgs[0].get_attribute("src")
                                                                  != before and imgs[0].get_attribute("src"))(
            browser.find_elements(By.CSS_SELECTOR, figure)), 120)
        assert after != before
        readout = browser.find_elements(By.CSS_SELECTOR, f"{explorer} .widget-slider .widget-readout")[0].text
        assert not readout.startswith("0x0-"), readout        # the window moved off the map's start
        _element_shot(browser, explorer, shots / "01-explorer-after.png")
    if path.stem == "02-load-a-crash-kernel":
        stepper = PANEL + ".jp-OutputArea-output > .widget-vbox"
        _element_shot(browser, stepper, shots / "02-stepper.png")
        text = browser.find_elements(By.CSS_SELECTOR, f"{stepper} .widget-html pre")[0].text
        assert text.startswith("1/") and "kexecfw_" in text, text
    print(f"{path.name}: screenshots in {shots}")
