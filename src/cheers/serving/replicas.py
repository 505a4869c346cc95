"""Replicated serving on Ray Serve: the same API and web UI, served by N replicas.

    cheers serve --replicas 2                      # one machine: a local Ray, two replicas
    cheers serve --replicas 4 --ray-address auto --gpus-per-replica 1   # a Ray cluster

Each replica is a Ray Serve deployment replica (its own process, possibly on another machine)
that loads the model once and runs the whole app of :func:`cheers.serving.create_app` — the
batcher included, so concurrent requests routed to one replica share its model calls. Ray's HTTP
proxy spreads requests over the replicas, restarts a replica whose process dies (requests that
were running on it are answered with a 5xx, which the ``openai`` client retries; none is left
without an answer) and, with ``autoscale``, adds and removes replicas with the load.
``GET /health`` (answered by any one replica) adds ``replicas``: how many are running, starting
or stopping, as Ray's controller sees them; every response names the replica that answered it
in the header ``x-cheers-replica``.

Needs the ``serve-ray`` extra (``pip install "cheers[serve-ray]"``). See docs/serving.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

try:
    import ray
    from ray import serve
except ImportError as err:  # pragma: no cover - depends on the installation
    from cheers.errors import CheersError

    raise CheersError(
        'replicated serving needs Ray Serve; install it with pip install "cheers[serve-ray]"'
    ) from err

from cheers.errors import CheersError
from cheers.serving.config import ServerConfig

#: The Ray Serve application's name and its deployment's.
APP_NAME = "cheers"
DEPLOYMENT_NAME = "CheersReplica"


@dataclass(frozen=True)
class ReplicaSettings:
    """What every replica loads and how Ray places and scales them."""

    #: The model folder or Hub id (``None``: the embedded model), as ``--model``.
    model: str | None = None
    dtype: str | None = None
    #: ``None``: CUDA when the replica has a GPU (``gpus_per_replica``), else the CPU.
    device: str | None = None
    #: As ``--lora``, ``--quantize``, ``--offload`` and ``--compile`` (:func:`load_pipeline`).
    lora: str | None = None
    quantize: str | None = None
    offload: bool = False
    compile: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    #: Replicas to keep running (ignored with ``autoscale``).
    replicas: int = 1
    #: ``(min, max)`` replicas: Ray adds replicas while each has more than
    #: ``target_ongoing_requests`` requests in flight, and removes idle ones.
    autoscale: tuple[int, int] | None = None
    target_ongoing_requests: float = 8.0
    gpus_per_replica: float = 0.0
    #: CPU cores each replica reserves; its torch threads (at least one).
    cpus_per_replica: float = 1.0
    #: How often Ray checks that a replica is alive, and how long it waits for an answer.
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.replicas, bool)
            or not isinstance(self.replicas, int)
            or self.replicas < 1
        ):
            raise CheersError(f"replicas must be a positive integer, got {self.replicas!r}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise CheersError(
                    f"autoscale must be MIN:MAX replicas with 0 ≤ MIN ≤ MAX and MAX ≥ 1, got "
                    f"{low}:{high}"
                )
        if self.gpus_per_replica < 0 or self.cpus_per_replica <= 0:
            raise CheersError(
                "gpus_per_replica must be ≥ 0 and cpus_per_replica > 0, got "
                f"{self.gpus_per_replica} and {self.cpus_per_replica}"
            )

    @property
    def replica_device(self) -> str:
        if self.device is not None:
            return self.device
        return "cuda" if self.gpus_per_replica > 0 else "cpu"

    def deployment_options(self) -> dict[str, Any]:
        """Ray Serve's options of the deployment (``serve.deployment(**options)``)."""
        config = self.server
        options: dict[str, Any] = {
            "name": DEPLOYMENT_NAME,
            "ray_actor_options": {
                "num_cpus": self.cpus_per_replica,
                "num_gpus": self.gpus_per_replica,
            },
            # Every request a replica's batcher may hold: its queue and one running batch. Ray
            # keeps the rest at the proxy until a replica has room (never refused there).
            "max_ongoing_requests": config.max_queue
            + max(config.max_batch_images, config.max_batch_texts),
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            # A stopping replica finishes what it holds (its batcher closes gracefully).
            "graceful_shutdown_timeout_s": 600,
        }
        if self.autoscale is None:
            options["num_replicas"] = self.replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.autoscale[0],
                "max_replicas": self.autoscale[1],
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        return options


def replica_counts(app_name: str = APP_NAME) -> dict[str, int]:
    """How many replicas of the app are in each state (``running``, ``starting``, …)."""
    status = serve.status().applications.get(app_name)
    if status is None:
        return {}
    deployment = status.deployments.get(DEPLOYMENT_NAME)
    if deployment is None:
        return {}
    states = {
        str(k).rsplit(".", 1)[-1].lower(): int(v) for k, v in deployment.replica_states.items()
    }
    return {"running": states.pop("running", 0), **states}


@serve.ingress()
class CheersReplica:
    """One replica: the model, loaded once, and the whole app (batcher, routes, UI) over it."""

    def __init__(self, settings: ReplicaSettings) -> None:
        import torch

        from cheers.loading import load_pipeline

        torch.set_num_threads(max(1, int(settings.cpus_per_replica)))
        self.settings = settings
        self.pipeline = load_pipeline(
            settings.model,
            settings.dtype,
            settings.replica_device,
            lora=settings.lora,
            quantize=settings.quantize,
            offload=settings.offload,
            compile=settings.compile,
        )
        self.replica = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> Any:
        from cheers.serving.app import create_app

        async def replicas() -> dict[str, Any]:
            counts = await asyncio.to_thread(replica_counts)
            return {**counts, "answered_by": self.replica}

        app = create_app(self.pipeline, self.settings.server, replicas=replicas)
        return NamedReplica(app, self.replica)


class NamedReplica:
    """ASGI wrapper: every response says which replica answered (``x-cheers-replica``)."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.header = (b"x-cheers-replica", name.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named)


def application(settings: ReplicaSettings) -> Any:
    """The Ray Serve application of ``settings`` (give it to ``serve.run``)."""
    deployment = serve.deployment(CheersReplica, **settings.deployment_options())
    return deployment.bind(settings)


def start(
    settings: ReplicaSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    ray_init: dict[str, Any] | None = None,
) -> None:
    """Connect to the Ray cluster at ``address`` (``None``: start a local one), start Ray
    Serve's proxy on ``host:port`` and deploy the replicas; returns once they all serve."""
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False, **(ray_init or {})}
        if address is None:
            # A local cluster: only the loopback address, as `cheers serve` itself.
            options.setdefault("_node_ip_address", "127.0.0.1")
        ray.init(address=address, **options)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(settings), name=APP_NAME, route_prefix="/")


def stop() -> None:
    """Remove the application, stop Ray Serve and leave Ray (the local cluster stops)."""
    serve.shutdown()
    ray.shutdown()


__all__ = [
    "APP_NAME",
    "CheersReplica",
    "ReplicaSettings",
    "application",
    "replica_counts",
    "start",
    "stop",
]
