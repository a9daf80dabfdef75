"""The app in a real browser, tried as an attacker would: started from another folder as `streamlit run
<repo>/app/Home.py`, with a run named like a Markdown link and image, an error that carries one, and links with
bad query parameters. Nothing may render as a link, an image or HTML, no page may show an exception, and the
browser may ask no other host for anything. Started on all interfaces, it refuses a visitor from another
machine. Screenshots are saved in the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import validate_config
from tests.browser.test_app_browser import ARGS, CHROMIUM, free_port, open_and_settle
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "[click](http://evil) ![x](http://evil/x.png) **bold** <b>html</b>"
# Elements the hostile strings would make if they were read as Markdown or HTML.
INJECTED = "() => [...document.querySelectorAll('a[href*=evil], img[src*=evil], [data-testid=stMain] b')].length"


def serve(tmp_path: Path, home: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    """`streamlit run <repo>/app/Home.py` from an empty folder, as someone would start a clone."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)")
    port, elsewhere = free_port(), tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")} | {"KDLIB_HOME": str(home)}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.port", str(port)]
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [*command, "--server.headless", "true", *flags], cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=20)


def this_machines_address() -> str | None:
    """An address of this machine that is not loopback (the one a route to the outside would leave from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_hostile_names_errors_and_links_show_as_text_and_nothing_leaves_the_machine(tmp_path):
    from playwright.sync_api import sync_playwright

    store = RunStore(tmp_path / "home")
    run_id = store.create_run(validate_config(tiny_config(output={"route": {"every": 1}})))
    assert execute(run_id, store) == "done"
    failed = store.create_run(validate_config(tiny_config(seed=1)))
    store.end_run(failed, "failed", error=f"it broke: {HOSTILE}")
    for i in (run_id, failed, *store.runs("teacher").id):
        store.rename_run(i, HOSTILE)
    process, port = serve(tmp_path, store.home)
    url, shots, outside = f"http://127.0.0.1:{port}", tmp_path / "screenshots", []
    shots.mkdir()
    pages = {
        "train-watching": (f"/train?run={run_id}", HOSTILE),
        "runs-failed": (f"/runs?run={failed}", f"it broke: {HOSTILE}"),
        "inspect-hostile-link": (f"/inspect?run={urllib.parse.quote(HOSTILE)}", f"run = {HOSTILE}, which"),
        "temperature-nan": ("/temperature?T=nan", "T = nan, which this page cannot use; using 4.0 instead"),
        "pskd-alpha-2": ("/lesson_pskd?alpha=2", "alpha = 2, which this page cannot use; using 1.0 instead"),
        "pskd-p-negative": ("/lesson_pskd?p=-1", "p = -1, which this page cannot use; using 0.0 instead"),
        "train-bad-form": ("/train?epochs=abc&method.temperature=.nan", "epochs = abc, which"),
        "home": ("/", "KD Explorer"),
    }
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            for name, (path, expected) in pages.items():
                open_and_settle(page, url + path)
                page.screenshot(path=str(shots / f"{name}.png"))
                assert page.locator('[data-testid="stException"]').count() == 0, name
                assert page.evaluate(INJECTED) == 0, name
                assert expected in page.locator('[data-testid="stMain"]').inner_text(), name
            favicon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\").href")
            browser.close()
    finally:
        stop(process)
    assert favicon.startswith("data:image/svg+xml")  # the emoji, drawn here
    assert outside == []
    print(f"screenshots in {shots}")


def test_started_on_all_interfaces_it_refuses_another_machine(tmp_path):
    from playwright.sync_api import sync_playwright

    address = this_machines_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    process, port = serve(tmp_path, tmp_path / "home", "--server.address", "0.0.0.0")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            open_and_settle(page, f"http://{address}:{port}/")
            page.screenshot(path=str(tmp_path / "refused.png"))
            refused = page.locator('[data-testid="stMain"]').inner_text()
            open_and_settle(page, f"http://127.0.0.1:{port}/")
            served = page.locator('[data-testid="stMain"]').inner_text()
            browser.close()
    finally:
        stop(process)
    assert "serves only the machine it runs on" in refused and "Start the default run" not in refused
    assert "Start the default run" in served
    assert f"refused a visitor from {address}" in (tmp_path / "streamlit.log").read_text()
