"""Run a command beside one real vLLM server, started once for all of it (``make test``).

    python tools/shared_server.py [--log FILE] -- COMMAND...

Starts ``bbt_mini.run.server`` on the offline model, on a free loopback port, with an API key
(so that the wrong-key test has something to refuse) and ``--enforce-eager`` (see ``FLAGS``),
waits until it answers, then runs
COMMAND with three variables set: ``BBT_SERVICE_URL`` and ``BBT_API_KEY`` name the server,
and ``BBT_SERVICE_PIDFILE`` is a file holding the process id of the server running now. The
real-server tests (``tests/test_vllm.py``) and chapter 1's server section use this server
instead of starting their own (each start takes minutes on a CPU).

The server is supervised as a service would be: if it dies (the kill-and-resume test kills
it on purpose), it is started again on the same port, and the pid file names the new one.
When COMMAND ends, fails, or this script is interrupted or terminated, the server's process
group is stopped. COMMAND's exit status is returned. Without this script the tests and the
chapter start their own server, as before.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KEY = "bbt-shared-server"  # a test key on a loopback port, not a secret
# vLLM without its compilation warm-up: answered after 53 s here against 199 s compiled (2-core CPU,
# other jobs beside it). The checks need a real server's answers, not its fastest forward pass.
FLAGS = ("--enforce-eager",)


def say(text: str) -> None:
    print(f"shared server: {text}", file=sys.stderr, flush=True)


class Supervised:
    """One vLLM server on one port, started again whenever it exits, until :meth:`close`."""

    def __init__(self, model: str, port: int, log: Path, pidfile: Path, wait_s: float):
        from bbt_mini.run import server

        self.server, self.model, self.port, self.log, self.pidfile = server, model, port, log, pidfile
        self.wait_s, self.proc, self.starts = wait_s, None, 0
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.start()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def start(self) -> None:
        t0 = time.perf_counter()
        proc = self.server.start(self.model, port=self.port, api_key=KEY, log=self.log, wait_s=self.wait_s,
                                 extra=FLAGS)
        with self.lock:
            if self.closed.is_set():  # closed while starting: do not leave it behind
                self.server.stop(proc)
                return
            self.proc, self.starts = proc, self.starts + 1
            self.pidfile.write_text(str(proc.pid))
        say(f"start {self.starts} answered at http://127.0.0.1:{self.port}/v1 after "
            f"{time.perf_counter() - t0:.0f} s (pid {proc.pid})")

    def _watch(self) -> None:
        while not self.closed.wait(1.0):
            if self.proc.poll() is not None:
                say(f"pid {self.proc.pid} exited (code {self.proc.returncode}); starting it again")
                try:
                    self.start()
                except (RuntimeError, TimeoutError, OSError) as e:
                    say(f"could not start it again: {e}")
                    return

    def close(self) -> None:
        with self.lock:
            self.closed.set()
            if self.proc is not None:
                self.server.stop(self.proc)
        self.thread.join(self.wait_s + 30)  # a start in flight ends, and stops what it started
        self.pidfile.unlink(missing_ok=True)
        say(f"stopped ({self.starts} start(s) in all)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--log", type=Path, help="the server's log (default: a folder in $TMPDIR, removed "
                        "when the command succeeds)")
    parser.add_argument("--wait-s", type=float, default=float(os.environ.get("BBT_VLLM_START_S", 600)),
                        help="how long the server may take to answer (default 600 s, or $BBT_VLLM_START_S)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")

    from bbt_mini.run import server

    port = server.free_port()
    folder = Path(tempfile.mkdtemp(prefix="bbt-shared-vllm-"))
    log = args.log or folder / "server.log"
    say(f"starting vLLM on {args.model} at 127.0.0.1:{port} (log {log})")

    def stop_on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop_on_signal)
    served, status = None, 1
    try:
        served = Supervised(args.model, port, log, folder / "server.pid", args.wait_s)
        env = dict(os.environ, BBT_SERVICE_URL=f"http://127.0.0.1:{port}/v1", BBT_API_KEY=KEY,
                   BBT_SERVICE_PIDFILE=str(served.pidfile))
        status = subprocess.call(command, env=env)
        return status
    except KeyboardInterrupt:
        return 130
    finally:
        if served is not None:
            served.close()
        if status == 0:  # the server's log is kept where something failed
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
