"""`make lab` starts JupyterLab, also as root (as it runs in many containers)."""

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_lab_starts_a_server():
    # The environment these tests run in (.venv, or make test-latest's own), taken as it is:
    # -o keeps make from (re)installing anything into it.
    command = ["make", "-s", "lab", f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.installed",
               "LAB_ARGS=--no-browser --port=0 --ServerApp.token=test"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    log = []
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=1):
                line = process.stdout.readline()
                log.append(line)
                if "http://127.0.0.1" in line or "http://localhost" in line:
                    break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    text = "".join(log)
    assert "http://" in text, f"make lab did not start a server (running as uid {os.getuid()}):\n{text}"
