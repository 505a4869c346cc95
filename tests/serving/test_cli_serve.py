"""``cheers serve`` as users run it: a process on the embedded model, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import cheers
from cheers.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_then_exits_cleanly_on_sigterm():
    openai = pytest.importorskip("openai")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(cheers.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "cheers", "serve", "--port", str(port), "--max-queue", "8"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["cheers"]
        with ThreadPoolExecutor(1) as pool:
            # A request still running when SIGTERM comes is finished before the process ends.
            extra = {"num_inference_steps": 30, "seed": 0}
            images = pool.submit(
                client.images.generate, prompt="a red circle", n=4, extra_body=extra
            )
            while httpx.get(f"http://127.0.0.1:{port}/health").json()["running"] == 0:
                assert not images.done()
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            assert len(images.result().data) == 4
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read()
    assert "loading the model" in log and "Finished server process" in log


def test_serve_refuses_bad_flags_before_loading(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert main(["serve", "--max-queue", "0"]) == 2
    assert "max_queue must be a positive integer" in capsys.readouterr().err


def test_serve_help_names_every_flag(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--max-queue", "--model", "--device", "examples:"):
        assert flag in out
