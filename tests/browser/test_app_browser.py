"""The app in a real browser: `streamlit run`, headless Debian chromium, Playwright's sync API.

Launches a toy2d run from Train, waits until the live chart has points, then opens Runs & compare,
Decision boundaries, the lessons, Home, Inspect (clicking a point picks its sample) and Teacher
route; no page may show an exception box. The screenshots are saved in the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kdlib.runner import RunHandle
from kdlib.store import ACTIVE, RunStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_TRACES = ("train loss (steps)", "train loss (epoch mean)", "test accuracy")

# Where the most difficult sample of the first chart is drawn (page pixels), and its index.
HARDEST_POINT = """() => { const gd = document.querySelectorAll('.js-plotly-plot')[0], t = gd._fullData[0];
    const xs = Array.from(t.x), i = xs.indexOf(Math.max(...xs)), r = gd.getBoundingClientRect();
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i]), Array.from(t.customdata)[i]]; }"""

# The longest array of the live chart's traces (the curves of the run, or of its teacher while it trains).
LIVE_POINTS = """names => Math.max(0, ...Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
    gd => (gd._fullData || []).filter(t => names.includes(t.name)).map(t => (t.x || []).length)))"""


# The plots a visitor sees (not those of a hidden tab): their titles and where they end, in page pixels.
SHOWN_PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd => gd.offsetParent !== null)
    .map(gd => [((gd.layout.title && gd.layout.title.text) || '').replace(/<[^>]*>/g, ''),
                gd.getBoundingClientRect().bottom])"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)")
    home, port = tmp_path / "home", free_port()
    log = open(tmp_path / "streamlit.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/Home.py",
            "--server.headless",
            "true",
            "--server.address",
            "localhost",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env={**os.environ, "KDLIB_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, home
    store = RunStore(home)
    for run_id in store.runs(None).id:  # runs are processes of their own: end them before the folder goes
        if store.run(run_id)["status"] in ACTIVE:
            store.request(run_id, "stop")
            RunHandle(run_id, store).wait(timeout=60)
    process.terminate()
    process.wait(timeout=20)
    log.close()


def open_and_settle(page, url: str) -> None:
    """Open a page and wait until Streamlit has drawn it and stopped running its script."""
    page.goto(url)
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=stMainBlockContainer]')?.innerText || '').length > 20",
        timeout=90_000,
    )
    quiet_since = time.monotonic()
    deadline = quiet_since + 60
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.5:
        if page.locator('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').count():
            quiet_since = time.monotonic()
        time.sleep(0.25)


def no_exception(page, name: str, shots: Path) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{name}: {boxes.first.inner_text()}"


def test_launch_watch_and_inspect_a_run_in_a_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.browser.test_app_learn import check_a_lesson_link_and_a_slider_step

    url, home = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})

        open_and_settle(page, f"{url}/train?epochs=10&teacher.epochs=5&method.temperature=2")
        no_exception(page, "train-form", shots)
        page.get_by_role("button", name="Start").click()
        clicked = time.monotonic()
        page.wait_for_function(f"() => ({LIVE_POINTS})({list(LIVE_TRACES)}) > 0", timeout=120_000)
        first_points = time.monotonic() - clicked
        no_exception(page, "train-live", shots)
        run_id = RunStore(home).runs("student").id.iloc[0]
        assert RunHandle(run_id, RunStore(home)).wait(timeout=240) == "done"
        page.wait_for_function("() => document.body.innerText.includes('done · epoch 10/10')", timeout=30_000)
        no_exception(page, "train-done", shots)

        # a 1400 x 900 screen holds the controls, the curves and both decision boundaries, as TF Playground does
        screen = browser.new_page(viewport={"width": 1400, "height": 900})
        open_and_settle(screen, f"{url}/train?run={run_id}")
        screen.wait_for_function("() => document.body.innerText.includes('teacher (mlp)')", timeout=30_000)
        no_exception(screen, "train-1400x900", shots)
        shown = screen.evaluate(SHOWN_PLOTS)
        assert [title for title, _ in shown][:3] == ["", "student after epoch 10", "teacher (mlp)"], shown
        assert all(bottom <= 900 for _, bottom in shown[:3]), shown
        for button in ("Start", "Pause", "Stop"):
            assert screen.get_by_role("button", name=button).bounding_box()["y"] < 900
        screen.close()

        redraw = check_a_lesson_link_and_a_slider_step(browser, url, shots)
        for name in ("runs", "boundaries", "temperature", "lesson_route", "lesson_pskd", "lesson_wsl", ""):
            open_and_settle(page, f"{url}/{name}")
            no_exception(page, name or "home", shots)
        open_and_settle(page, f"{url}/boundaries?run={run_id}&epoch=1&color=label")
        assert page.locator(".js-plotly-plot").count() == 2  # student and teacher
        no_exception(page, "boundaries-epoch-1", shots)

        open_and_settle(page, f"{url}/inspect?run={run_id}")
        no_exception(page, "inspect", shots)
        x, y, hardest = page.evaluate(HARDEST_POINT)
        page.mouse.click(x, y)  # picks that sample
        page.wait_for_function(f"() => document.body.innerText.includes('Sample {hardest} of the train split')")
        no_exception(page, "inspect-clicked", shots)
        open_and_settle(page, f"{url}/inspect?run={run_id}&view=calibration&sample=3")
        no_exception(page, "inspect-calibration", shots)
        open_and_settle(page, f"{url}/route?run={run_id}")
        assert page.locator(".js-plotly-plot").count() == 2  # the map and the distances
        no_exception(page, "route", shots)
        browser.close()
    print(f"first live points {first_points:.1f} s after the click; a lesson slider step redrew its figure "
          f"{redraw:.2f} s after the key press; screenshots in {shots}")
    assert len(list(shots.glob("*.png"))) == 19
