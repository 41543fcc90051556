"""Open the fake study's report.html in headless Chromium (Debian's chromium + chromium-driver, which
.ci/chromium.sh installs) and check what a reader sees: every image decoded, one final-table row per model."""
import importlib.util
import os
import tempfile

import pytest

from fakestudy import MODELS

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        return f"{' and '.join(absent)} not installed (apt-get install chromium chromium-driver, or run .ci/chromium.sh)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium not installed (pip install -e .[test])"
    return None


@pytest.fixture(scope="module")
def driver():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,4000"):
            opts.add_argument(arg)
        drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            yield drv
        finally:
            drv.quit()


def test_report_html_in_chromium(driver, rendered_study):
    from selenium.webdriver.support.ui import WebDriverWait

    study, _ = rendered_study
    driver.get((study / "report.html").as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
    assert len(images) >= 10  # tradeoff, final curves, 3 sweeps, per-class, 3 confusions, 2 data figures
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert broken == [], f"images that did not load: {broken}"

    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('#final-table tbody tr'))"
        ".map(r => r.cells[0].textContent.trim());")
    assert cells == [v[0] for v in MODELS.values()]
    # something the eye checks: the table is laid out (non-zero height), not swallowed by a CSS mistake
    assert driver.execute_script("return document.getElementById('final-table').getBoundingClientRect().height") > 50
