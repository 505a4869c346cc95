"""``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart).

Images come back as base64 PNG (``b64_json``). Image ``i`` of a request with ``seed`` s is the
image the pipeline makes alone from seed ``s + i`` (see :mod:`cheers.serving.runner`); a
request without a seed gets a random one. ``n > 1`` works for edits too.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from cheers.samplers import DEFAULTS
from cheers.serving.batching import Job
from cheers.serving.errors import APIError, validation_message
from cheers.serving.images import image_from_bytes, png_base64
from cheers.serving.runner import ImageSettings, ImageWork
from cheers.serving.schemas import (
    ImageData,
    ImageEditForm,
    ImageGenerationRequest,
    ImagesResponse,
    dump,
)
from cheers.serving.state import ClientGone, ServerState

router = APIRouter()

#: Form fields of an edit that hold files; every other field is text.
_IMAGE_FIELDS = ("image", "image[]")


def sampling_settings(
    state: ServerState, steps: int | None, guidance: float | None
) -> tuple[int, float]:
    """The request's steps and guidance (the authors' defaults when left out), checked."""
    steps = DEFAULTS.num_inference_steps if steps is None else steps
    state.check_range(steps, "num_inference_steps", 2, state.config.max_steps, "the server's limit")
    guidance = DEFAULTS.guidance_scale if guidance is None else guidance
    if guidance > state.config.max_guidance_scale:
        raise APIError(
            400,
            f"guidance_scale must be at most {state.config.max_guidance_scale}, got {guidance}",
            param="guidance_scale",
        )
    return steps, guidance


async def _images(state: ServerState, request: Request, job: Job) -> Response:
    try:
        images: list[Image.Image] = await state.run(request, job)
    except ClientGone:
        return Response(status_code=499)
    encoded = await asyncio.to_thread(lambda: [png_base64(im) for im in images])
    return JSONResponse(dump(ImagesResponse(data=[ImageData(b64_json=b) for b in encoded])))


@router.post("/v1/images/generations")
async def generations(request: Request) -> Response:
    state: ServerState = request.app.state.serving
    body = await state.read_json(request, ImageGenerationRequest)
    state.check_model(body.model, required=False)
    prompt = state.check_text(body.prompt, "prompt")
    negative = None
    if body.negative_prompt is not None:
        negative = state.check_text(body.negative_prompt, "negative_prompt")
    n = state.check_range(body.n, "n", 1, state.config.max_n, "images per request")
    height, width = state.check_size(body.size)
    state.check_response_format(body.response_format)
    steps, guidance = sampling_settings(state, body.num_inference_steps, body.guidance_scale)
    negated = negative is not None
    key = ImageSettings("generate", steps, guidance, negative=negated, height=height, width=width)
    work = ImageWork(prompt, n, state.seed(body.seed), negative_prompt=negative)
    return await _images(state, request, Job(key, work, rows=n))


@router.post("/v1/images/edits")
async def edits(request: Request) -> Response:
    state: ServerState = request.app.state.serving
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise APIError(
            415,
            "images/edits takes multipart/form-data (the image file and the text fields), got "
            f"{content_type or 'no Content-Type'!r}",
            code="unsupported_media_type",
        )
    form = await request.form(max_files=4, max_fields=32, max_part_size=1024 * 1024)
    files = [v for k in _IMAGE_FIELDS for v in form.getlist(k)]
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name in _IMAGE_FIELDS:
            continue
        if name == "mask":
            raise APIError(
                400,
                "mask is not supported: Cheers edits follow the instruction alone; drop it",
                param="mask",
            )
        if not isinstance(value, str):
            raise APIError(
                400, f"form field {name!r} is a file; only 'image' takes a file", param=name
            )
        if name in fields:
            raise APIError(400, f"form field {name!r} is given twice; give it once", param=name)
        fields[name] = value
    if len(files) != 1 or not isinstance(files[0], UploadFile):
        raise APIError(
            400,
            f"images/edits needs exactly one image file in the form field 'image', got "
            f"{len(files)}",
            param="image",
        )
    try:
        body = ImageEditForm.model_validate(fields)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise APIError(400, message, param=param) from exc
    state.check_model(body.model, required=False)
    prompt = state.check_text(body.prompt, "prompt")
    n = state.check_range(body.n, "n", 1, state.config.max_n, "images per request")
    height, width = state.check_size(body.size)
    state.check_response_format(body.response_format)
    steps, guidance = sampling_settings(state, body.num_inference_steps, body.guidance_scale)
    strength = DEFAULTS.edit_strength if body.strength is None else body.strength
    # Too few steps for the strength is the sampler's SamplerError (a 400) when the job runs.
    data = await files[0].read()
    source = await asyncio.to_thread(image_from_bytes, data, state.config.max_image_pixels, "image")
    key = ImageSettings("edit", steps, guidance, strength=strength, height=height, width=width)
    work = ImageWork(prompt, n, state.seed(body.seed), source=source)
    return await _images(state, request, Job(key, work, rows=n))
