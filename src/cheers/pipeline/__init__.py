"""The request path: from a call on :class:`CheersPipeline` to the model and back.

    >>> from cheers.pipeline import CheersPipeline
    >>> pipe = CheersPipeline.from_pretrained("path/to/Cheers")          # doctest: +SKIP
    >>> images = pipe("a red circle").images                             # doctest: +SKIP

The files follow one request in order (docs/architecture.md has the picture):

1. :mod:`~cheers.pipeline.facade` — :class:`CheersPipeline`, the one object users hold;
2. :mod:`~cheers.pipeline.arguments` — the request arguments, checked once at the facade;
3. :mod:`~cheers.pipeline.memory` — will the call fit? refused before anything is allocated;
4. :mod:`~cheers.pipeline.llm_inputs` — prompts and images → LLM input rows;
5. :mod:`~cheers.pipeline.drawing` — image rows → latents → images (text-to-image, editing
   and :mod:`~cheers.pipeline.draw_requests`, images drawn inside a conversation);
6. :mod:`~cheers.pipeline.answering` — text rows → answers (with
   :mod:`~cheers.pipeline.text_requests`, rows that each keep their own settings);
7. :mod:`~cheers.pipeline.loops` — the loops both share over a prefilled KV cache: the image
   ODE and token decoding; :mod:`~cheers.pipeline.static_decoding` is the static-shape
   variant of the latter;
8. :mod:`~cheers.pipeline.conversation` — multi-turn conversations kept within the context,
   on top of the facade.

Below the path: the model (:mod:`cheers.model`), the samplers (:mod:`cheers.samplers`, with
the flow-time schedule) and the model transforms (:mod:`cheers.transforms`).
"""

from cheers.pipeline.arguments import ImagePipelineOutput
from cheers.pipeline.draw_requests import DrawRequest
from cheers.pipeline.facade import CheersPipeline
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextAnswer, TextRequest

__all__ = [
    "IMAGE_IN_PROMPT",
    "CheersPipeline",
    "DrawRequest",
    "ImagePipelineOutput",
    "TextAnswer",
    "TextRequest",
]
