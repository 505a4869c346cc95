"""Two replicas on Ray Serve (a local Ray on 127.0.0.1): the official client, concurrent
clients answered as the pipeline answers alone, /health counting replicas, and a replica killed
under load restarted by Ray with every request answered."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import tempfile
import threading
import time

import httpx
import pytest
import ray
from live_server import STEPS, TEST_CONFIG, assert_same_image, decode_b64_png

from cheers.serving import replicas

openai = pytest.importorskip("openai")

#: Every wait of these tests is bounded by this many seconds.
TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of two CPUs and Ray Serve on a free loopback port, two replicas; shut down
    (Ray's processes and temporary folder) after the module."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit
    port = _free_port()
    settings = replicas.ReplicaSettings(
        server=TEST_CONFIG,
        replicas=2,
        cpus_per_replica=0.5,
        health_check_period_s=1.0,
        health_check_timeout_s=10.0,
    )
    replicas.start(
        settings,
        port=port,
        ray_init={"num_cpus": 2, "object_store_memory": 80 * 2**20, "_temp_dir": temp},
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        replicas.stop()
        shutil.rmtree(temp, ignore_errors=True)


def _client(url: str, retries: int = 0, hook=None) -> openai.OpenAI:
    hooks = {"response": [hook]} if hook else {}
    http = httpx.Client(timeout=TIMEOUT, event_hooks=hooks)
    return openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=retries, http_client=http)


def _wait_running(url: str, n: int) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        health = httpx.get(f"{url}/health", timeout=TIMEOUT).json()
        if health["replicas"].get("running") == n and len(health["replicas"]) == 2:
            return health
        assert time.monotonic() < deadline, f"replicas never all running: {health}"
        time.sleep(0.5)


def _image_request(client: openai.OpenAI, seed: int, replicas_seen: list | None = None):
    raw = client.images.with_raw_response.generate(
        prompt="a green triangle", n=1, extra_body={"seed": seed, "num_inference_steps": STEPS}
    )
    if replicas_seen is not None:
        replicas_seen.append((time.monotonic(), raw.headers["x-cheers-replica"]))
    return raw.parse().data[0]


def test_sixteen_concurrent_clients_on_two_replicas(cluster, pipe):
    health = _wait_running(cluster, 2)
    assert health["status"] == "ok" and health["image_size"] == 64
    assert [m.id for m in _client(cluster).models.list().data] == ["cheers"]
    assert "<html" in httpx.get(cluster, timeout=TIMEOUT).text.lower()  # the web UI

    def session(i: int):
        client = _client(cluster)
        if i % 2:
            return (
                client.chat.completions.create(
                    model="cheers",
                    messages=[{"role": "user", "content": f"Hello number {i}"}],
                    max_tokens=8,
                    temperature=0.9,
                    seed=i,
                )
                .choices[0]
                .message.content
            )
        return _image_request(client, seed=i)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(session, range(16)))
    for i, answer in enumerate(answers):
        if i % 2:
            messages = [{"role": "user", "content": f"Hello number {i}"}]
            assert answer == pipe.chat(messages, max_new_tokens=8, temperature=0.9, generator=i)
        else:
            alone = pipe("a green triangle", num_inference_steps=STEPS, generator=i).images[0]
            assert_same_image(decode_b64_png(answer.b64_json), alone)


def test_a_replica_killed_under_load_is_restarted_and_no_request_is_lost(cluster, pipe):
    _wait_running(cluster, 2)
    failures: list[int] = []

    def count(response: httpx.Response) -> None:
        if response.status_code >= 500:
            failures.append(response.status_code)

    started = threading.Event()
    answered_by: list[tuple[float, str]] = []

    def session(i: int) -> list:
        client = _client(cluster, retries=5, hook=count)
        out = []
        for k in range(3):
            out.append((i * 3 + k, _image_request(client, i * 3 + k, answered_by)))
            started.set()
        return out

    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{replicas.APP_NAME}#")
    ]
    assert len(names) == 2, names
    killed, survivor = (name.rsplit("#", 1)[-1] for name in names)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(session, i) for i in range(16)]
        assert started.wait(TIMEOUT)
        # Kill a replica that is serving this load (the router may send the first answers to
        # the other one).
        deadline = time.monotonic() + TIMEOUT
        while killed not in {name for _, name in answered_by}:
            assert time.monotonic() < deadline, "the load never reached the first replica"
            time.sleep(0.05)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(names[0], namespace="serve"))
        results = [r for f in futures for r in f.result(timeout=TIMEOUT)]
    assert len(results) == 48  # every request answered (some after a retry)
    # Both replicas were serving this load, and the survivor went on after the kill.
    assert {name for _, name in answered_by} >= {killed, survivor}
    assert any(t > killed_at and name != killed for t, name in answered_by)
    for seed, data in results:
        alone = pipe("a green triangle", num_inference_steps=STEPS, generator=seed).images[0]
        assert_same_image(decode_b64_png(data.b64_json), alone)
    health = _wait_running(cluster, 2)  # Ray started a new replica in place of the killed one
    renamed = {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{replicas.APP_NAME}#")
    }
    assert names[0] not in renamed and names[1] in renamed and len(renamed) == 2
    print(f"5xx answers retried by the client: {len(failures)}; health: {health['replicas']}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "0"], "replicas must be a positive integer, got 0"),
        (["--autoscale", "3"], "--autoscale must be MIN:MAX (e.g. 1:4), got '3'"),
        (["--autoscale", "4:2"], "0 ≤ MIN ≤ MAX and MAX ≥ 1, got 4:2"),
        (["--replicas", "2", "--autoscale", "1:2"], "give --replicas or --autoscale, not both"),
        (["--replicas", "2", "--gpus-per-replica", "-1"], "gpus_per_replica must be ≥ 0"),
    ],
)
def test_bad_replica_flags_are_refused_before_ray_starts(flags, message, capsys):
    from cheers.cli import main

    assert main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err
