"""The sweep report in a real browser (Debian's headless Chromium, installed by `make test`).

A copy of the report gets a small probe script (the report itself carries none) that records, once
the page has loaded: images that failed to decode, the page's scroll width at a 1280 px
viewport, where the headline block starts, and any error event. Chromium's ``--dump-dom`` returns
the result in the page title. The same checks run on deliberately broken copies, so the test can
fail. The first-screen screenshot is kept in ``build/test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.test_report import _make_run

from miascale.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
WIDTH, HEIGHT = 1280, 900

PROBE = """<script>
var errors = 0;
window.addEventListener('error', function () { errors += 1; }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var h = document.getElementById('headline');
  document.title = 'PROBE ' + JSON.stringify({
    images: imgs.length, broken: broken, errors: errors,
    width: document.documentElement.scrollWidth,
    headline_top: h ? h.getBoundingClientRect().top : -1,
    height: window.innerHeight});
});
</script>"""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (make test installs it; CI must have it)",
)


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "chromium is missing: `make test` installs Debian's chromium"
    cmd = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _probe(page: Path, tmp: Path) -> dict:
    probed = page.with_name(page.stem + "-probed.html")
    text = page.read_text(encoding="utf-8").replace("</head>", PROBE + "</head>", 1)
    probed.write_text(text, encoding="utf-8")
    r = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), tmp=tmp)
    m = re.search(r"<title>PROBE (\{.*?\})</title>", r.stdout)
    assert m, f"the page did not finish loading: {r.stderr[-2000:]}"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    _make_run(run_dir)
    return build_report(run_dir)


def test_report_renders_cleanly_with_the_answer_first(report, tmp_path):
    got = _probe(report, tmp_path)
    assert got["images"] >= 4 and got["broken"] == 0 and got["errors"] == 0, got
    assert got["width"] <= WIDTH, got  # nothing wider than the viewport
    assert 0 <= got["headline_top"] < got["height"] / 2, got  # the answer is in the first screen
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-first-screen.png"
    r = _chromium(f"--screenshot={shot}", report.as_uri(), tmp=tmp_path)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr[-2000:]
    pdf = ARTIFACTS / "report.pdf"
    r = _chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report.as_uri(), tmp=tmp_path)
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000


def test_the_probe_catches_a_broken_image_and_a_missing_headline(report, tmp_path):
    text = report.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    assert _probe(broken, tmp_path)["broken"] == 1
    headless = tmp_path / "headless.html"
    headless.write_text(text.replace('id="headline"', 'id="elsewhere"'))
    assert _probe(headless, tmp_path)["headline_top"] == -1
    wide = tmp_path / "wide.html"
    wide.write_text(text.replace("<body>", '<body><div style="width:3000px">x</div>', 1))
    assert _probe(wide, tmp_path)["width"] > WIDTH
