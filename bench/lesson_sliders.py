"""Lesson sliders: the time of one slider step on each lesson page, the whole page rerun against the slider's fragment.

Each lesson page (Learn: temperature, route, PS-KD, WSL) holds its slider and the figures it moves in an
`st.fragment`, so a step reruns that part alone; before, every step reran the whole page (its reads of the
store included). This script opens each page with Streamlit's AppTest on a store of small real runs (a
teacher with its route, RCO, WSL and PS-KD students on mnist1d, and `--runs` more CE runs, as a store
in use holds), then times steps of the page's slider, alternating between two values:

- `full`: `slider.set_value(v).run()`, AppTest's rerun of the whole page (what a step cost before);
- `fragment`: the rerun the browser asks for when the slider lives in a fragment (the same request with
  the fragment's id), the first step at each value and then revisits (the figures are cached by value).

    .venv/bin/python bench/lesson_sliders.py [--steps 10] [--runs 20] [--quick]

Prints a table of medians in ms per page, then `slider_step_ms <the slowest page's fragment step>` and
`slider_full_ms <the slowest page's whole-page step>`. The browser's own drawing is not in these times.
Copied into an older checkout (pages without fragments), it times their whole-page steps, and a
slider step there is one.
`--quick` (tests/test_bench.py): 2 steps, no extra runs, a smaller store; its numbers mean little.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from timing import parse_args  # noqa: E402

HOME_PAGE = str(ROOT / "app" / "Home.py")
SMALL = ["data.n_samples=1500", "epochs=3"]
WITH_TEACHER = ["teacher.epochs=4"]
RUNS = {  # config -> overrides
    "mnist1d_rco.yaml": [*SMALL, *WITH_TEACHER, "method.anchors.num_anchors=2"],
    "mnist1d_wsl.yaml": [*SMALL, *WITH_TEACHER],
    "mnist1d_pskd.yaml": SMALL,
}


def fill_store(home: Path, extra_runs: int) -> dict[str, str]:
    """Train the lessons' runs (and `extra_runs` CE runs) into `home`; their ids by config."""
    from kdlib.runner import execute
    from kdlib.store import RunStore
    from kdlib.validation import load_config

    store, ids = RunStore(home), {}
    for name, overrides in RUNS.items():
        ids[name] = store.create_run(load_config(ROOT / "configs" / name, overrides))
        assert execute(ids[name], store) == "done", store.run(ids[name])["error"]
    for seed in range(extra_runs):
        run_id = store.create_run(load_config(ROOT / "configs" / "mnist1d_ce.yaml", [*SMALL, f"seed={seed}"]))
        assert execute(run_id, store) == "done"
    return ids


def open_page(page: str, **query: str):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(HOME_PAGE, default_timeout=60).run()
    app.query_params.update(query)
    app.switch_page(f"pages_/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def step(app, kind: str, key: str, value, fragment: bool) -> float:
    """Seconds of one slider step: the page's rerun, or its fragment's (the one fragment on the page)."""
    from streamlit.runtime.scriptrunner import RerunData
    from streamlit.testing.v1 import app_test, local_script_runner

    class SessionPages(app_test.PagesManager):
        """A session's pages outlive a run (AppTest makes new ones each run): a fragment's page link finds them."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._set_pages(dict(app._registered_pages))

    widget = getattr(app, kind)(key=key).set_value(value)
    rerun = RerunData
    if fragment:
        (fragment_id,) = list(app._fragment_storage._fragments)  # what the browser sends with the widget's value
        rerun = functools.partial(RerunData, fragment_id_queue=[fragment_id])
    start = time.perf_counter()
    with mock.patch.object(local_script_runner, "RerunData", rerun), mock.patch.object(app_test, "PagesManager",
                                                                                       SessionPages):
        widget.run()
    seconds = time.perf_counter() - start
    assert not app.exception, [e.value for e in app.exception]
    assert getattr(app, kind)(key=key).value == value
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="slider steps of each kind on each page")
    parser.add_argument("--runs", type=int, default=20, help="CE runs in the store besides the lessons' own")
    args = parse_args(parser, {"steps": 2, "runs": 0}, "the same runs")
    home = Path(tempfile.mkdtemp(prefix="kdlib-bench-sliders-"))
    os.environ["KDLIB_HOME"], os.environ["KDLIB_WARM"] = str(home), "0"  # the pages launch nothing here
    try:
        ids = fill_store(home, args.runs)
        from kdlib.store import RunStore

        teacher = RunStore(home).runs("teacher").id.iloc[0]
        rco = ids["mnist1d_rco.yaml"]
        pages = {  # page -> (its query, the slider's kind and key, two values to go between, values not seen yet)
            "temperature": ({"source": teacher}, "slider", "temperature-T", (3.0, 5.0), (6.0, 7.0, 8.0, 9.0)),
            "lesson_route": ({"run": rco}, "select_slider", f"route-lesson-epoch-{rco}", (1, 2), ()),
            "lesson_pskd": ({}, "slider", "pskd-alpha", (0.3, 0.6), (0.05, 0.1, 0.15, 0.2)),
            "lesson_wsl": ({}, "slider", "wsl-ps", (0.5, 0.7), (0.11, 0.12, 0.13, 0.14)),
        }
        print(f"{args.steps} steps of each kind per page; {len(RunStore(home).runs(None))} runs in the store")
        print("| page | whole page ms | fragment ms, first at a value | fragment ms, revisits |")
        print("|---|---|---|---|")
        full_worst = fragment_worst = 0.0
        for page, (query, kind, key, values, new) in pages.items():
            app = open_page(page, **query)
            full = [step(app, kind, key, values[i % 2], fragment=False) for i in range(args.steps)]
            fragments = bool(app._fragment_storage._fragments)  # none: pages from before (run from an old checkout)
            first = [step(app, kind, key, value, fragment=True) for value in new[: args.steps] if fragments]
            again = [step(app, kind, key, values[i % 2], fragment=True) for i in range(args.steps) if fragments]
            medians = [statistics.median(t) * 1000 if t else float("nan") for t in (full, first, again)]
            print(f"| {page} | {medians[0]:.1f} | {medians[1]:.1f} | {medians[2]:.1f} |")
            full_worst = max(full_worst, medians[0])
            fragment_worst = max(fragment_worst, *(m for m in medians[1:] if m == m) if fragments else [medians[0]])
        print(f"slider_full_ms {full_worst:.1f}")
        print(f"slider_step_ms {fragment_worst:.1f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
