"""The warm worker: a server process that has imported torch and kdlib, and forks a run's process on request.

A plain background run pays Python's start and torch's import (seconds) before its first step. The warm
worker pays them once: `python -m kdlib.warm` imports the modules a worker needs (never runs a torch op
nor starts a thread of its own: forking a process whose threads ran is unsafe), then listens on a Unix
socket. `spawn()` sends it a run's worker arguments, environment and an open worker.log; it forks a
child that starts a new session, takes the log as stdout and stderr, takes the caller's environment,
and runs `kdlib worker RUN` as `python -m kdlib` would. The child is the run's own process (own pid,
recorded in the store, so a run whose process dies reads failed); the server reaps it.

A server serves the callers whose environment it was started with: the same Python, the same folder and
the same variables read at import (PYTHON*, OMP_*, CUDA_*, KDLIB_* ... of `import_environment`); their
socket's name is a hash of these. Where there is none, `spawn()` returns None (launch() starts the
plain process) and starts one for the next runs, owned by the calling process: it ends when that
process ends, after IDLE_SECONDS without a request and without a running child, or when kdlib's code
changes under it. KDLIB_WARM=0 turns it off. Linux only (fork, SO_PEERCRED).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

IDLE_SECONDS = 600.0
PRELOAD = ("torch", "torch._dynamo", "sklearn.datasets", "kdlib.__main__", "kdlib.runner", "kdlib.cli_commands")
# variables read when modules are imported (a child of the server cannot change them afterwards);
# KDLIB_HOME and KDLIB_THREADS are read while a run runs, so the child's own are used
IMPORT_PREFIXES = ("PYTHON", "LD_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "CUDA_", "NVIDIA_", "TORCH",
                   "PYTORCH_", "KDLIB_")
RUN_TIME = ("KDLIB_HOME", "KDLIB_THREADS", "KDLIB_WARM")
# set by the imports themselves (torch, its compiler, sklearn): a caller that has imported them has them
SET_BY_IMPORTS = ("KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR", "CUDA_MODULE_LOADING")
START_SERVER = True  # the CLI turns it off: it ends before a server it started could serve
_SERVERS: dict[Path, subprocess.Popen] = {}  # the servers this process started, by socket


def worker_environment() -> dict[str, str]:
    """The environment of a run's process: this one's, with the folder that holds kdlib first on PYTHONPATH."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def available() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("KDLIB_WARM", "1") != "0"


def import_environment(env: dict[str, str], cwd: str) -> dict:
    """What a server and its callers must share: the Python, the folder, the variables read at import."""
    names = sorted(n for n in env if n.startswith(IMPORT_PREFIXES) and n not in RUN_TIME + SET_BY_IMPORTS)
    return {"python": sys.executable, "cwd": cwd, "env": {n: env[n] for n in names}}


def socket_path(env: dict[str, str] | None = None, cwd: str | None = None) -> Path | None:
    """The socket of the server for `env` (default: this process's runs') and `cwd` (default: this folder), in a
    folder only this user can enter; None where the warm worker is off (KDLIB_WARM=0, not Linux) or has no folder."""
    if not available():
        return None
    env = worker_environment() if env is None else env
    cwd = os.getcwd() if cwd is None else cwd
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"kdlib-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's: not a place to talk to a server
    digest = hashlib.sha256(json.dumps(import_environment(env, cwd), sort_keys=True).encode()).hexdigest()
    return folder / f"{digest[:20]}.sock"


class WarmProcess:
    """A run's process forked by the warm worker, seen like a Popen: `pid`, `poll()`, `wait()`.

    It is the server's child, not this process's: the server reaps it and keeps its exit status, so
    `returncode` reads 0 once it has ended, whatever its status (the store has the run's)."""

    def __init__(self, pid: int) -> None:
        from kdlib.store.runs import process_start

        self.pid, self.started, self.returncode = pid, process_start(pid), None

    def poll(self) -> int | None:
        from kdlib.store.runs import process_start

        if self.returncode is None and (self.started is None or process_start(self.pid) != self.started):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def spawn(args: list[str], env: dict[str, str], log_fd: int) -> WarmProcess | None:
    """Start `python -m kdlib ARGS` through the warm worker for `env` and this folder, with `log_fd` as
    its stdout and stderr; None where there is no such server (one is started for the next time)."""
    if (path := socket_path(env, cwd := os.getcwd())) is None:
        return None
    request = json.dumps({"args": args, "env": env, "cwd": cwd, "python": sys.executable}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(str(path))
            socket.send_fds(connection, [request], [log_fd])
            reply = _read_line(connection)
    except (OSError, ValueError):  # none yet, or a dead one's socket
        reply = None
    if reply is None or "pid" not in reply:
        if reply is None and START_SERVER:
            start_server(env)
        return None
    return WarmProcess(reply["pid"])


def ready(env: dict[str, str] | None = None) -> bool:
    """Whether a warm worker serves `env` (default: this process's runs') and this folder now."""
    if (path := socket_path(env)) is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(path))
        except OSError:
            return False
    return True


def server_pid(env: dict[str, str] | None = None) -> int | None:
    """The pid of the warm worker that serves `env` (default: this process's runs') and this folder, if one does."""
    if not ready(env):
        return None
    try:
        return int(socket_path(env).with_suffix(".lock").read_text())
    except (OSError, ValueError):
        return None


def start_server(env: dict[str, str] | None = None) -> bool:
    """Start the warm worker for `env` (default this process's) and this folder, unless one runs or is
    starting; it serves from when it has imported torch and kdlib (seconds), and ends with this process."""
    env = worker_environment() if env is None else env
    if (path := socket_path(env)) is None:
        return False
    if (mine := _SERVERS.get(path)) is not None and mine.poll() is None:
        return False
    with open(path.with_suffix(".log"), "ab") as log:  # a duplicate that finds the lock taken exits at once
        server = subprocess.Popen(
            [sys.executable, "-m", "kdlib.warm", str(path), "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    _SERVERS[path] = server
    threading.Thread(target=server.wait, name="kdlib-warm-reaper", daemon=True).start()  # no zombie when it ends
    return True


def _read_line(connection: socket.socket, limit: int = 1 << 20) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        if not (chunk := connection.recv(65536)) or len(data) > limit:
            return None
        data += chunk
    return json.loads(data)


# --- the server ------------------------------------------------------------------------------------------


class Server:
    """Listens on `path`; forks a child per request. `serve()` returns only in a child, with its request."""

    def __init__(self, path: Path, parent: int, added: dict[str, str], lock_inode: int, idle: float = IDLE_SECONDS):
        self.path, self.parent, self.idle, self.pid, self.lock_inode = path, parent, idle, os.getpid(), lock_inode
        self.added = added  # the variables the imports set: a child has them, as a fresh worker would
        self.children: set[int] = set()
        self.own = import_environment(dict(os.environ), os.getcwd())
        self.code = _code_times()

    def serve(self) -> dict | None:
        os.umask(0o077)
        self.path.unlink(missing_ok=True)  # a dead server's
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.inode = self.path.stat().st_ino
        self.listener.listen(16)
        signal.signal(signal.SIGCHLD, self._reap)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        last = time.monotonic()
        try:
            while os.getppid() == self.parent and (self.children or time.monotonic() - last < self.idle):
                if select.select([self.listener], [], [], 1.0)[0]:  # a SIGCHLD is reaped meanwhile (PEP 475)
                    connection = self.listener.accept()[0]
                    request = self._answer(connection)
                    if os.getpid() != self.pid:
                        return request  # the child, to run its worker
                    if request is False:
                        break  # kdlib's code changed: the next caller starts a fresh server
                    last = time.monotonic()
            return None
        finally:
            if os.getpid() == self.pid:
                self._close()

    def _answer(self, connection: socket.socket) -> dict | bool | None:
        fds = []
        with connection:
            try:
                connection.settimeout(10)
                data, fds, _, _ = socket.recv_fds(connection, 65536, 1)
                if not data:
                    return None  # a caller asking whether it serves (`ready`)
                while not data.endswith(b"\n") and (chunk := connection.recv(65536)) and len(data) < 1 << 20:
                    data += chunk
                request = json.loads(data)
                refusal = self._refusal(connection, request, fds)
                if refusal:
                    print(f"kdlib warm worker: refused a run: {refusal}", flush=True)
                    connection.sendall(json.dumps({"refused": refusal}).encode() + b"\n")
                    return False if refusal.startswith("kdlib's code") else None
                sys.stdout.flush()  # nothing of the server's own output goes to the run's log
                sys.stderr.flush()
                # SIGCHLD waits until the child is counted: one that ends at once is then reaped and forgotten
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
                if (pid := os.fork()) == 0:
                    self.listener.close()
                    return request | {"log_fd": fds[0], "env": self.added | request["env"]}
                self.children.add(pid)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except (OSError, ValueError) as error:  # a caller gone, or one that spoke nonsense
                print(f"kdlib warm worker: a request failed: {error!r}", flush=True)
            finally:
                if os.getpid() == self.pid:
                    for fd in fds:
                        os.close(fd)
        return None

    def _refusal(self, connection: socket.socket, request: dict, fds: list[int]) -> str:
        uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.getuid() or len(fds) != 1:
            return "not a caller of this user's, or no log"
        if import_environment(request["env"], request["cwd"]) != self.own or request["python"] != sys.executable:
            return "another environment than the server's"
        if _code_times() != self.code:
            return "kdlib's code changed since the server started"
        if threading.active_count() > 1 or _torch_initialized():
            return "the server's state is not a clean one to fork"  # never expected: refuse rather than risk it
        return ""

    def _reap(self, *_) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)

    def _close(self) -> None:
        """Remove the socket and the lock (unless a newer server has put its own there), and an empty log."""
        lock, log = self.path.with_suffix(".lock"), self.path.with_suffix(".log")
        for path, inode in ((self.path, self.inode), (lock, self.lock_inode)):
            try:
                if path.stat().st_ino == inode:
                    path.unlink()
            except OSError:
                pass
        try:
            if log.stat().st_size == 0 and os.fstat(1).st_ino == log.stat().st_ino:
                log.unlink()
        except OSError:
            pass
        self.listener.close()


def _code_times() -> dict[str, int]:
    """Modification times of kdlib's imported files: where one changes, the server's copy is stale."""
    root = str(Path(__file__).resolve().parent)
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    times = {}
    for file in sorted(f for f in files if f and f.startswith(root)):
        try:
            times[file] = os.stat(file).st_mtime_ns
        except OSError:
            times[file] = -1
    return times


def _torch_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def run_child(request: dict) -> int:
    """In the forked child: become `python -m kdlib ARGS` started by the caller (session, log, env, argv)."""
    os.setsid()  # a session of its own, as a plain worker has: a Ctrl-C in the caller's terminal is not its
    for number in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    log = request["log_fd"]
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import runpy

    sys.argv = ["-m", *request["args"]]
    runpy.run_module("kdlib", run_name="__main__", alter_sys=True)  # as `python -m kdlib ARGS`: exits with its code
    return 0


def main(argv: list[str]) -> int:
    path, parent = Path(argv[0]), int(argv[argv.index("--parent") + 1])
    lock = open(path.with_suffix(".lock"), "a+")  # held while the server lives: one server per socket
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another one serves, or is starting
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # `server_pid`
    lock.flush()
    os.ftruncate(1, 0)  # its log (stdout) starts empty: the previous server's is gone with it
    import importlib

    before = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
        if os.getppid() != parent:
            return 0
    added = {name: value for name, value in os.environ.items() if name not in before}
    request = Server(path, parent, added, os.fstat(lock.fileno()).st_ino).serve()
    if request is None:
        return 0
    lock.close()
    return run_child(request)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
