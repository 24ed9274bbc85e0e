"""tools/shared_server.py's supervisor, on a stand-in process instead of vLLM (the real server's
start, kill and restart are checked by tests/test_vllm.py under ``make test``): it names the
server to the command, starts it again on the same port when it dies, returns the command's
exit status and leaves no process behind."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def shared(monkeypatch):
    """The module, with ``server.start`` replaced by a sleeping process in its own session."""
    from bbt_mini.run import server

    spec = importlib.util.spec_from_file_location("shared_server", ROOT / "tools" / "shared_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.started = []

    def start(model, port, api_key, log, wait_s, extra):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        module.started.append(dict(model=model, port=port, key=api_key, extra=extra, proc=proc))
        return proc

    monkeypatch.setattr(server, "start", start)
    yield module
    for s in module.started:  # whatever a failing test left
        server.stop(s["proc"])


def test_a_killed_server_is_started_again_on_its_port_and_stopped_at_the_end(shared, tmp_path):
    pidfile = tmp_path / "server.pid"
    served = shared.Supervised("smollm2", 18011, tmp_path / "log", pidfile, wait_s=30)
    first = int(pidfile.read_text())
    os.killpg(first, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and pidfile.read_text() == str(first):
        time.sleep(0.2)
    second = int(pidfile.read_text())
    served.close()
    assert second != first and [s["proc"].pid for s in shared.started] == [first, second]
    assert all(s["port"] == 18011 and s["key"] == shared.KEY and s["extra"] == shared.FLAGS for s in shared.started)
    assert all(s["proc"].poll() is not None for s in shared.started) and not pidfile.exists()


def test_the_command_sees_the_server_and_its_exit_status_is_returned(shared, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the folder kept after a failure lands here
    check = ("import os, sys; url = os.environ['BBT_SERVICE_URL']; "
             "sys.exit(0 if url.startswith('http://127.0.0.1:') and url.endswith('/v1') "
             "and os.environ['BBT_API_KEY'] and os.path.isfile(os.environ['BBT_SERVICE_PIDFILE']) else 3)")
    assert shared.main(["--", sys.executable, "-c", check]) == 0
    assert shared.main(["--", sys.executable, "-c", "import sys; sys.exit(7)"]) == 7
    assert len(shared.started) == 2 and all(s["proc"].poll() is not None for s in shared.started)
    kept = [f for f in tmp_path.iterdir() if f.name.startswith("bbt-shared-vllm-")]
    assert len(kept) == 1 and not (kept[0] / "server.pid").exists()  # the failed run's folder, no stale pid
