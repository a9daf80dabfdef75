"""Every benchmark in bench/ runs: its `--quick` mode (a few seconds, tiny data) exits 0 and prints its result lines.

The scripts are found by glob, so a new benchmark is run here without being listed; it must have a
`--quick` mode, and its result lines must be listed in RESULT_LINES (the test says so when they are not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HELPERS = {"images.py", "settings.py", "timing.py"}  # modules the scripts import, not scripts
NUMBER = r"-?\d+(\.\d+)?"
ROW = rf"\| {NUMBER} ± "  # a Markdown table cell: mean ± std
RESULT_LINES = {  # script -> patterns that must each match a whole line of its output
    "claims.py": [
        r"\| id \| claim \| setting \| CE here \(published\) \| baseline \| method \| difference \| shown\? \| .*",
        *(rf"\| {claim} \| .*{ROW}.*" for claim in ("temperature", "rco", "pskd-ece", "pskd-rescaling", "wsl-weights",
                                                       "wsl", "lsskd", "prokt")),
    ],
    "domain.py": [
        r"\| target accuracy % \| toy2d_shift \| mnist1d_shift \|",
        *(
            rf"\| student, {row}.* {ROW}.* {ROW}.*"
            for row in ("source only", "KD without", "progressive", "uda_pkd with")
        ),
        rf"\| teacher after uda_pkd's adaptation \(official form\) {ROW}.*",
    ],
    "first_point.py": [rf"{name} {NUMBER}" for name in ("first_point_s", "first_point_plain_s", "torch_import_s",
                                                         "first_point_ratio")],
    "lesson_sliders.py": [rf"slider_step_ms {NUMBER}", rf"slider_full_ms {NUMBER}"],
    "live.py": [rf"live_lag_p95_s {NUMBER}"],
    "methods.py": [
        r"\| method \| test accuracy % \| ECE % \| NLL \| time / epoch vs CE \|",
        *(rf"\| {method} {ROW}.*" for method in ("ce", "kd", "dfa", "lsskd", r"pskd \(cnn1d\)")),
    ],
    "overhead.py": [
        rf"overhead_ratio_images {NUMBER}",
        rf"overhead_ratio_mnist1d {NUMBER}",
        rf"overhead_ratio {NUMBER}",
    ],
    "probe.py": [rf"probe_step_extra_us {NUMBER}", rf"probe_epoch_ms_per_step_read {NUMBER}",
                 rf"probe_epoch_ms_vmap {NUMBER}"],
    "store.py": [rf"trajectory_read_ms {NUMBER}"],
    "teacher_cache.py": [rf"cache_ratio {NUMBER}"],
}
SCRIPTS = sorted(path.name for path in BENCH.glob("*.py") if path.name not in HELPERS)


def test_the_scripts_are_found():
    assert SCRIPTS, f"no benchmark scripts found in {BENCH}"
    assert HELPERS <= {path.name for path in BENCH.glob("*.py")}, "a helper module listed here is gone: update HELPERS"
    assert set(RESULT_LINES) <= set(SCRIPTS), "RESULT_LINES names a script that is gone"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_mode_runs_and_prints_its_results(script, tmp_path):
    path = BENCH / script
    # a script without --quick would ignore the flag (or refuse it) and run its full benchmark: say so at once
    assert "--quick" in path.read_text(), f"bench/{script} has no --quick mode (see bench/timing.py's parse_args)"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLIB_HOME": str(tmp_path / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, str(path.relative_to(ROOT)), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"bench/{script} --quick exited {done.returncode}:\n{output[-4000:]}"
    assert script in RESULT_LINES, (
        f"bench/{script} --quick ran; list the lines it must print in tests/test_bench.py's RESULT_LINES:\n{done.stdout}"
    )
    lines = done.stdout.splitlines()
    missing = [p for p in RESULT_LINES[script] if not any(re.fullmatch(p, line) for line in lines)]
    assert not missing, f"bench/{script} --quick printed no line matching {missing}:\n{done.stdout}"
