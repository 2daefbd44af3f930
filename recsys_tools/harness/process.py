"""Child-process plumbing: one implementation for the infra launchers, the services, the demo.

Every process runs in its own process group with its output captured to a log file, so
that a failed start can quote the log tail and a stop can signal the whole group (a JVM or
a wrapper script never outlives us). Processes owned by this Python process (tests, the
demo, the benchmarks) are also killed from an ``atexit`` hook and, on Linux, by the kernel
when we die (parent-death signal); processes started detached (``recsys infra up``) are
tracked by pid in a state file instead.

The parent-death signal is tied to the *thread* that started the child (Linux semantics):
start long-lived processes from a thread that outlives them (the main thread, or one that
stays up while they run).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys.errors import InfraError

_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out; racy by nature, but servers bind it within seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a log, for error messages; empty when there is no log."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state != "Z"
    return True


def pid_cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (Linux); ``None`` where /proc is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def pid_matches(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and still the process we started (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    cmdline = pid_cmdline(pid)
    return cmdline is None or marker in cmdline


def stop_pid(pid: int, *, marker: str | None = None, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``timeout_s``; True if it was running.

    Used for detached processes whose ``Popen`` object is gone. ``marker`` must
    appear in the command line, so that a recycled pid is never signalled.
    """
    if marker is not None and not pid_matches(pid, marker):
        return False
    if not pid_alive(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _load_prctl() -> Callable[..., Any] | None:
    """``prctl`` from libc, looked up here in the parent: the child, forked from a process
    whose other threads may hold the dynamic loader's lock, must not call ``dlopen``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl: Callable[..., Any] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: own process group, and SIGTERM when the parent dies."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One process in its own group, logging to a file; stoppable and restartable."""

    #: ``stop`` sends SIGTERM to the whole group (a JVM behind a wrapper script); False:
    #: to the leader only, which then drains its own children (as Kubernetes signals PID 1)
    term_group: bool = True

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        detached: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.detached = detached
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    # Detached servers must survive us; owned ones must not.
                    start_new_session=self.detached,
                    preexec_fn=None if self.detached else _die_with_parent,
                    close_fds=True,
                )
            except OSError as exc:
                raise InfraError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from None
        finally:
            log.close()
        if not self.detached:
            with _LIVE_LOCK:
                _LIVE.add(self)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait ``timeout_s``, then SIGKILL the group; safe to call twice.

        Returns the exit status when the process ended by itself (before or within the
        grace), None when it had to be killed or was never started.
        """
        popen = self.popen
        if popen is None:
            return None
        code = popen.poll()
        if code is None:
            if self.term_group:
                _signal_group(popen.pid, signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signal.SIGTERM)
            try:
                code = popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait(timeout=10)
        # The group may hold stragglers even after the leader exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return code

    def kill(self) -> None:
        """SIGKILL the group without grace: simulates a crash in fault tests."""
        popen = self.popen
        if popen is None:
            return
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        """The whole log (every start appends to it); empty before the first start."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(
        self, check: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.2
    ) -> None:
        """Poll ``check`` until it passes; fail early, quoting the log, if the process exits."""
        deadline = time.monotonic() + timeout_s
        last_exc: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise InfraError(
                    f"{self.name} exited with code {self.returncode()} before it was ready "
                    f"({what}); log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if check():
                    return
            except Exception as exc:  # readiness probes fail in many ways while starting
                last_exc = exc
            time.sleep(interval_s)
        detail = f" (last error: {last_exc})" if last_exc else ""
        raise InfraError(
            f"{self.name} not ready after {timeout_s:.0f}s waiting for {what}{detail}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )


class ManagedServer:
    """Lifecycle shared by the local servers (Kafka, Tansu, Redis): one process, started
    only when not running, ready only when its probe passes, stoppable and restartable on
    the same address. Subclasses build the process and say what "ready" means."""

    _proc: ManagedProcess | None = None
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _ready(self) -> bool:
        raise NotImplementedError

    def _launch(self, proc: ManagedProcess, what: str) -> None:
        """Start ``proc`` and wait until ready; a process that never gets ready is stopped."""
        self._proc = proc
        proc.start()
        try:
            proc.wait_ready(self._ready, timeout_s=self.start_timeout_s, what=what)
        except BaseException:
            proc.stop(timeout_s=5)
            raise

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout_s: float | None = None) -> None:
        if self._proc is not None:
            self._proc.stop(timeout_s=self.stop_timeout_s if timeout_s is None else timeout_s)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def log_tail(self, lines: int = 20) -> str:
        return self._proc.log_tail(lines) if self._proc is not None else ""


def stop_all_owned() -> None:
    """Stop every non-detached process still running (atexit, session teardown)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop(timeout_s=10.0)


atexit.register(stop_all_owned)
