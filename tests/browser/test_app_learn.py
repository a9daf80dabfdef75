"""Learning and tuning in a real browser: a lesson's link restored in a new browser context and a slider step
that redraws its figure (`check_a_lesson_link_and_a_slider_step`, run inside test_app_browser's test, whose
app it shares), Start to the first live point, and a temperature changed while the run trains (the run
records it, its curves mark it). Timings are printed, not asserted (bench/ measures them);
screenshots of every state are saved in the test's temporary folder.
"""

from __future__ import annotations

import time

import pytest

from kdlib.runner import RunHandle
from kdlib.store import RunStore
from tests.browser.test_app_browser import ARGS, CHROMIUM, LIVE_POINTS, LIVE_TRACES, no_exception, open_and_settle
from tests.browser.test_app_browser import server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

# The entropy figure's marker sits at the lesson's temperature: its x is what the slider set.
MARKER_T = """() => { const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
    const xs = plots.flatMap(gd => (gd._fullData || []).filter(t => t.mode && t.mode.includes('markers')
        && (t.x || []).length === 1).map(t => t.x[0]));
    return xs.length ? xs[0] : null; }"""
# Dotted vertical lines on the live curves: a change made while the run trained.
CHANGE_LINES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
    gd => (gd.layout.shapes || []).filter(s => s.line && s.line.dash === 'dot')).length"""


def slider(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")


def check_a_lesson_link_and_a_slider_step(browser, url: str, shots) -> float:
    """A slider step on the temperature lesson redraws its figure and its link; the link opened in a new browser
    context (no shared state) restores the slider and the figure. Returns the redraw's seconds.
    Called by tests/browser/test_app_browser.py, whose app and browser it shares."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_and_settle(page, f"{url}/temperature?T=4&compare=1,8")
    no_exception(page, "temperature-link", shots)
    page.wait_for_function(f"() => ({MARKER_T})() === 4", timeout=30_000)
    slider(page, "temperature T").focus()
    pressed = time.monotonic()
    page.keyboard.press("ArrowRight")  # one step of 0.5
    page.wait_for_function(f"() => ({MARKER_T})() === 4.5", timeout=30_000)
    redraw = time.monotonic() - pressed
    page.wait_for_function("() => location.search.includes('T=4.5')", timeout=30_000)
    no_exception(page, "temperature-step", shots)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    other = context.new_page()
    open_and_settle(other, page.url)
    other.wait_for_function(f"() => ({MARKER_T})() === 4.5", timeout=30_000)
    assert slider(other, "temperature T").input_value() == "4.5"
    no_exception(other, "temperature-restored", shots)
    context.close()
    page.close()
    return redraw


def test_start_then_change_the_temperature_while_the_run_trains(server, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, home = server
    store = RunStore(home)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_and_settle(page, f"{url}/train?epochs=5000&teacher.epochs=3&method.temperature=2")
        page.get_by_role("button", name="Start").click()
        clicked = time.monotonic()
        page.wait_for_function(f"() => ({LIVE_POINTS})({list(LIVE_TRACES)}) > 0", timeout=120_000)
        first_point = time.monotonic() - clicked
        no_exception(page, "train-first-point", shots)
        run_id = store.runs("student").id.iloc[0]
        deadline = time.monotonic() + 120
        while store.epoch_metrics(run_id).empty:  # the student's own epochs, after its teacher's
            assert time.monotonic() < deadline, "the student recorded no epoch in 120 s"
            time.sleep(0.2)

        # paused while the sliders move: on this 2-core machine a refresh of the live panel takes about a second
        # while the run trains beside the browser, and a key press that meets one can be lost; the change itself
        # reaches the run mid-training all the same (tests/test_tuning.py changes a running run from the CLI)
        page.get_by_role("button", name="Pause").click()
        deadline = time.monotonic() + 60
        while store.run(run_id)["status"] != "paused":
            assert time.monotonic() < deadline, "the run did not pause"
            time.sleep(0.2)
        page.get_by_text("Tune while it trains").click()
        temperature, apply = slider(page, "temperature"), page.get_by_role("button", name="Apply")
        enabled = "() => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Apply' && !b.disabled)"
        for attempt in range(3):  # a key press that meets the panel's once-a-second redraw can be lost: press again
            temperature.focus()
            for _ in range(20 if attempt == 0 else 1):
                page.keyboard.press("ArrowRight")
            try:
                page.wait_for_function(enabled, timeout=20_000)
                break
            except Exception:  # noqa: BLE001 - Playwright's timeout: try once more
                page.screenshot(path=str(shots / f"train-tune-not-taken-{attempt}.png"))
        page.screenshot(path=str(shots / "train-tune-moved.png"))
        apply.click()
        deadline = time.monotonic() + 30
        while store.changes(run_id).empty:
            assert time.monotonic() < deadline, "Apply asked for nothing"
            time.sleep(0.2)
        page.get_by_role("button", name="Resume").click()
        deadline = time.monotonic() + 60
        while (changes := store.changes(run_id)).empty or changes.state.iloc[-1] != "applied":
            assert time.monotonic() < deadline, f"the change was not applied: {changes}"
            time.sleep(0.2)
        new = float(changes.value.iloc[-1])
        assert new > 2.0 and changes.path.tolist() == ["method.temperature"]  # the slider moved, nothing else
        epochs_then = len(store.epoch_metrics(run_id))
        deadline = time.monotonic() + 60
        while len(store.epoch_metrics(run_id)) < epochs_then + 2:
            assert time.monotonic() < deadline, "no epoch after the change"
            time.sleep(0.2)
        page.wait_for_function(f"() => ({CHANGE_LINES})() > 0", timeout=30_000)
        no_exception(page, "train-tuned", shots)
        time.sleep(2.5)
        page.screenshot(path=str(shots / "train-tuned-later.png"))
        page.evaluate("() => document.querySelector('.js-plotly-plot').scrollIntoView()")
        time.sleep(1.5)
        page.screenshot(path=str(shots / "train-tuned-curves.png"))
        RunHandle(run_id, store).stop()
        assert RunHandle(run_id, store).wait(timeout=60) == "stopped"
        recorded = store.epoch_metrics(run_id)["temperature"].tolist()
        assert recorded[0] == 2.0 and recorded[-1] == pytest.approx(new)
        browser.close()
    print(f"first live point {first_point:.2f} s after Start (its teacher trained first); temperature 2 -> {new:g}; "
          f"screenshots in {shots}")
