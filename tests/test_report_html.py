"""`assay report`: one self-contained HTML page of a real run directory (score, select,
tokenizer, a tiny proxy on the demo corpus), read as text and opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from assay.errors import InputError
from assay.recipe import parse_recipe, run_recipe
from assay.report import write_report

pytest.importorskip("matplotlib")

#: Debian's packages: the browser and the matching chromedriver (no browser is downloaded)
APT_PACKAGES = ["chromium", "chromium-driver"]


def _browser_binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


def _install_chromium() -> str | None:
    """Install Chromium from the system's packages when missing and we may (root, apt-get);
    the reason it is not there otherwise."""
    if all(_browser_binaries()):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Chromium and chromedriver are not installed (and not root with apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *APT_PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a fresh machine: the package lists first
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not all(_browser_binaries()):
        return f"apt-get could not install {APT_PACKAGES}: {done.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium driven by selenium through Debian's chromedriver (never a browser
    downloaded by selenium's manager); skipped, saying why, when it cannot be had."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    from selenium.webdriver.chrome.service import Service

    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    browser, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    yield driver
    driver.quit()


PROXY = {"preset": "tiny", "train": {"batch_size": 8, "seq_len": 128}, "eval_docs": 4}


@pytest.fixture(scope="module")
def run_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    heldout = {"paths": [str(demo_dir / "heldout")]}
    recipe = {
        "name": "report-demo",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {"score": {"scorer": "doc_stats"}},
            {"select": {"scores": "score", "column": "unique_word_frac", "keep": 0.4}},
            {"tokenizer": {"vocab_size": 512, "sample_docs": 300}},
            {"train_proxy": {"tokens": 3 * 8 * 128, "heldout": heldout, **PROXY}},
            {"stats": {"corpus": {"step": "select"}}},
        ],
    }
    root = tmp_path_factory.mktemp("report") / "run"
    run_recipe(parse_recipe(recipe), run_dir=root, progress=False)
    return root


def _summary(run_dir: Path, step: str) -> dict:
    from assay.util.files import read_json

    return read_json(run_dir / step / "step.json")["summary"]


def test_report_html_content(run_dir: Path, tmp_path: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    # self-contained: no script, nothing fetched from anywhere
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    srcs = re.findall(r'<img class="plot" alt="([^"]*)" src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for _, s in srcs)
    alts = {a for a, _ in srcs}
    assert {"score histograms", "selection histogram", "learning curve"} <= alts
    assert "mixture weights per step" in alts  # the proxy's mixture
    # every step has its section, with how long it took; an unknown kind its summary table
    for step in ("score", "select", "tokenizer", "train_proxy", "stats"):
        assert f'id="step-{step}"' in html
    assert "could not be drawn" not in html
    sel = _summary(run_dir, "select")
    kept = re.search(r'<b class="kept-docs">([\d,]+)</b>', html)
    assert kept and int(kept.group(1).replace(",", "")) == sel["kept_docs"] == 144
    assert f"score cutoff {sel['score_cutoff']:.4g}" in html
    # documents on both sides of the cutoff, with their texts, on the right side of it
    kept_docs = re.findall(r'<div class="doc kept"><b>score ([-\d.e+]+)</b>.*?<pre>', html)
    dropped = re.findall(r'<div class="doc dropped"><b>score ([-\d.e+]+)</b>.*?<pre>', html)
    assert len(kept_docs) == len(dropped) == 3
    assert min(map(float, kept_docs)) >= max(map(float, dropped))
    for domain, bpb in _summary(run_dir, "train_proxy")["bpb"].items():
        assert f"<td>{domain}</td>" in html and f"{bpb:.4g}" in html
    assert "python" in html and "polars" in html  # environment
    assert "code-00000.jsonl.gz" in html  # inputs' fingerprints

    other = write_report(run_dir, tmp_path / "elsewhere" / "r.html")
    assert other.read_text(encoding="utf-8").count("<section") == html.count("<section")
    assert not list((tmp_path / "elsewhere").glob("*.tmp*"))  # written atomically


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a run directory"):
        write_report(tmp_path)


def test_report_never_replaces_a_file_that_is_not_a_report(run_dir: Path, tmp_path: Path) -> None:
    recipe = run_dir / "recipe.yaml"
    before = recipe.read_bytes()
    with pytest.raises(InputError, match=r"name ending in \.html"):
        write_report(run_dir, recipe)
    page = tmp_path / "notes.html"
    page.write_text("<html><body>my own notes</body></html>")
    with pytest.raises(InputError, match="is not an assay report"):
        write_report(run_dir, page)
    assert recipe.read_bytes() == before and "my own notes" in page.read_text()
    # an earlier report is replaced
    again = tmp_path / "r.html"
    write_report(run_dir, again)
    first = again.read_text(encoding="utf-8")
    write_report(run_dir, again)
    assert again.read_text(encoding="utf-8").count("<section") == first.count("<section")


def test_report_cli(run_dir: Path, tmp_path: Path) -> None:
    from assay.cli.main import main

    out = tmp_path / "cli.html"
    main(["report", str(run_dir), "--out", str(out)])
    assert "<section" in out.read_text(encoding="utf-8")


def test_report_in_headless_chromium(chromium, run_dir: Path, tmp_path: Path) -> None:
    """Opened from a file:// URL: no console message, every plot decoded, the kept count on the
    page is the run's, and a screenshot that is not blank."""
    from PIL import Image

    path = write_report(run_dir, tmp_path / "report.html")
    chromium.get(path.as_uri())
    logs = chromium.get_log("browser")
    assert logs == [], logs
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    assert len(images) >= 5 and all(done and width > 100 for _, done, width in images), images
    kept = chromium.execute_script("return document.querySelector('b.kept-docs').textContent")
    assert int(kept.replace(",", "")) == _summary(run_dir, "select")["kept_docs"]
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.set_window_size(1280, min(height, 6000))
    shot = tmp_path / "report.png"
    assert chromium.save_screenshot(str(shot))
    assert shot.stat().st_size > 50_000
    picture = Image.open(shot).convert("L")
    lo, hi = picture.getextrema()
    assert hi - lo > 100  # not one colour
    # the plots are drawn: a good share of the page is neither background nor white
    hist = picture.histogram()
    assert sum(hist[:200]) > 0.02 * picture.width * picture.height
