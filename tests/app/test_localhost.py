"""The app listens on this machine only, whatever folder `streamlit run .../app/Home.py` starts in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import HOME

pytestmark = pytest.mark.slow


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (/proc/net/tcp and tcp6, state 0A)."""
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                words = bytes.fromhex(host)  # each 32-bit word is stored little-endian
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
                found.add(socket.inet_ntop(family, raw))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net")
def test_started_from_another_folder_it_listens_on_127_0_0_1_only(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    command = [sys.executable, "-m", "streamlit", "run", HOME, "--server.headless", "true", "--server.port", str(port)]
    with open(tmp_path / "streamlit.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "streamlit.log").read_text()
                time.sleep(0.3)
        assert listening(port) == {"127.0.0.1"}
        assert "Network URL" not in (tmp_path / "streamlit.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)
