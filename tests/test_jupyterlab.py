"JupyterLab for real: start a server, open a notebook in headless Chromium, run all cells, find the widgets."

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import chromium_page

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "results" / "screenshots"
TOKEN = "audiolab-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server over a copy of the notebook (so autosave never touches nbs/)."
    nb = json.loads((ROOT / "nbs" / "02_viz.ipynb").read_text())  # clean notebooks carry no kernelspec: name it
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    (tmp_path / "02_viz.ipynb").write_text(json.dumps(nb))
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter")}
    env.pop("MPLBACKEND", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--allow-root",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={TOKEN}",
            f"--ServerApp.root_dir={tmp_path}",
            "--LabApp.expose_app_in_browser=True",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start in 60 s")
    yield url
    proc.terminate()
    proc.wait(20)


def test_notebook_runs_in_jupyterlab(lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(1400, 1000) as page:
        page.goto(f"{lab}/lab/tree/02_viz.ipynb?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
        page.wait_for_function(
            """() => { const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const k = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
            return k && k.status === 'idle'; }""",
            timeout=120_000,
        )  # a fresh kernel, started and idle
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # no dialog to answer
        # done when the last cell has an execution count and the kernel is idle
        page.wait_for_function(
            """() => { const nb = window.jupyterapp.shell.currentWidget;
            const cells = nb.content.widgets.filter(c => c.model.type === 'code');
            return nb.sessionContext.session.kernel.status === 'idle' &&
                   cells.every(c => c.model.executionCount !== null); }""",
            timeout=240_000,
        )
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] "
            ".jp-RenderedText:has-text('Traceback')"
        )
        assert errors.count() == 0
        assert page.locator(".jp-OutputArea audio").count() >= 1  # ipywidgets.Audio players rendered
        assert page.locator(".jp-OutputArea img").count() >= 1  # spectrogram images / plots
        assert page.locator(".jp-OutputArea .widget-dropdown, .jp-OutputArea select").count() >= 1  # explorer
        page.locator(".jp-OutputArea audio").first.scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / "jupyterlab_viz.png")
