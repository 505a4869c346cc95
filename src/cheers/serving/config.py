"""The server's settings: limits, queue, batching. Written once, read by every part of the app."""

from __future__ import annotations

from dataclasses import dataclass

from cheers.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    """Limits and batching of one server.

    Every limit is checked before a request is queued, and a request over one is answered
    400 (413 for the body) naming the limit, so nothing reaches the model that it cannot run.
    """

    #: The id ``/v1/models`` lists and requests must name (or leave out, for images).
    model_name: str = "cheers"
    #: Requests waiting for the model; one more is answered 429.
    max_queue: int = 64
    #: How long the batcher waits after the first request of an idle spell for others to join it.
    admission_window_s: float = 0.01
    #: Images (rows) one model call generates at most; a single request may use all of them.
    max_batch_images: int = 16
    #: Conversations one decoding batch holds at most.
    max_batch_texts: int = 16
    #: Bytes of one request body (413 beyond).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Pixels (width × height) of one input image, checked before it is decoded.
    max_image_pixels: int = 4096 * 4096
    #: Images in one chat request.
    max_images_per_request: int = 4
    #: Characters of one prompt, instruction or message.
    max_prompt_chars: int = 4000
    #: Messages in one chat request.
    max_messages: int = 64
    #: Images one generation or edit request may ask for (``n``).
    max_n: int = 8
    #: Denoising steps one image request may ask for.
    max_steps: int = 200
    #: Upper bound of ``max_tokens`` (and its value when a request leaves it out).
    max_new_tokens: int = 256
    #: Largest classifier-free guidance scale accepted.
    max_guidance_scale: float = 50.0
    #: Responses kept for ``previous_response_id`` (the oldest is forgotten beyond).
    max_stored_responses: int = 256
    #: Seconds a stored response is kept.
    response_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in (
            "max_queue",
            "max_batch_images",
            "max_batch_texts",
            "max_body_bytes",
            "max_image_pixels",
            "max_images_per_request",
            "max_prompt_chars",
            "max_messages",
            "max_n",
            "max_steps",
            "max_new_tokens",
            "max_stored_responses",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServerConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.admission_window_s <= 10.0:
            raise ConfigError(
                f"ServerConfig.admission_window_s must be in [0, 10] seconds, got "
                f"{self.admission_window_s!r}"
            )
        if not self.response_ttl_s > 0:
            raise ConfigError(
                f"ServerConfig.response_ttl_s must be a positive number of seconds, got "
                f"{self.response_ttl_s!r}"
            )
        if self.max_n > self.max_batch_images:
            raise ConfigError(
                f"ServerConfig.max_n ({self.max_n}) exceeds max_batch_images "
                f"({self.max_batch_images}); one request must fit one batch"
            )
        if not self.model_name.strip():
            raise ConfigError("ServerConfig.model_name must be a non-empty string")
