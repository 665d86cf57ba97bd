"The offline docs renderer builds real pages: sidebar, signatures from show_doc, executed plots; checked in Chromium."

import subprocess
import sys
from pathlib import Path

from browser import chromium_page

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "results" / "screenshots"


def test_docs_render_and_browse(tmp_path):
    out = tmp_path / "site"
    subprocess.run(
        [sys.executable, "scripts/docs.py", "--out", str(out), "--only", "index", "00_core", "01_audio", "02_viz"],
        cwd=ROOT,
        check=True,
        env={**__import__("os").environ, "AUDIOLAB_OFFLINE_DOCS": "1"},
    )
    assert {p.name for p in out.glob("*.html")} == {"index.html", "core.html", "audio.html", "viz.html"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        page.goto((out / "index.html").as_uri())
        links = page.locator("nav.sidebar a").all_inner_texts()
        assert links[:3] == ["audiolab", "core", "audio"], links
        page.screenshot(path=SHOTS / "docs_index.png")
        page.goto((out / "audio.html").as_uri())
        assert page.locator("h3", has_text="load_audio").count() >= 1  # show_doc signature rendered
        assert "Traceback" not in page.inner_text("main.page")
        page.screenshot(path=SHOTS / "docs_audio.png", full_page=False)
        page.goto((out / "viz.html").as_uri())
        assert page.locator("main.page img").count() >= 1  # an executed plot made it into the page
        page.screenshot(path=SHOTS / "docs_viz.png", full_page=False)
