"""The ``cheers`` command line: generate, ask, chat and edit from a terminal.

    cheers generate "a red fox in the snow" --model ./Cheers --seed 0
    cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers
    cheers chat --model ./Cheers
    cheers edit photo.jpg --instruction "make it winter" --model ./Cheers

Each subcommand is one entry of :data:`COMMANDS` (a name mapped to its flags and its handler);
new subcommands such as ``train``, ``eval`` or ``demo`` are added there. Bad input never ends in
a traceback: :func:`main` prints ``error: <message>`` to stderr and returns exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import secrets
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from cheers.errors import CheersError
from cheers.samplers import DEFAULTS, SAMPLERS

if TYPE_CHECKING:
    from PIL import Image

    from cheers.pipeline import CheersPipeline

#: Where a model shipped inside the package lives; used when ``--model`` is omitted.
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"

#: Exit code for user errors (bad flags, missing files), as argparse uses for usage errors.
EXIT_USAGE = 2

_Flags = argparse.ArgumentParser | argparse._ArgumentGroup

_MODEL_HELP = (
    "the model: a folder holding config.json, the *.safetensors weights and the tokenizer files "
    "(e.g. a downloaded copy of ai9stars/Cheers), or a Hugging Face Hub id such as "
    "ai9stars/Cheers (downloaded on first use; needs `pip install 'cheers[hub]'`) "
    "(default: the model embedded in the package, if there is one)"
)


class UsageError(CheersError):
    """A command line that argparse cannot parse (unknown flag, value of the wrong type)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in descriptions as written and appends real defaults to flag help.

    Unlike ``ArgumentDefaultsHelpFormatter`` it skips ``None``/``False`` defaults, whose help
    text says in words what happens when the flag is left out.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default" in help_text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become :class:`UsageError` so :func:`main` reports them."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{message} (run `{self.prog} --help` for the flags)")


# ----------------------------------------------------------------------------- shared flags
def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    group.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="precision of the weights (default: bfloat16 on CUDA, float32 on CPU)",
    )
    group.add_argument(
        "--device",
        metavar="{cpu,cuda,cuda:N}",
        help="where to run the model (default: cuda if a GPU is available, else cpu)",
    )


def _add_seed_flag(parser: _Flags, help_text: str) -> None:
    parser.add_argument("--seed", type=int, metavar="N", help=help_text)


def _add_image_flags(parser: argparse.ArgumentParser, steps: int) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument(
        "--steps",
        type=int,
        metavar="N",
        default=steps,
        help="denoising steps; fewer is faster but rougher (at least 2)",
    )
    guidance = group.add_mutually_exclusive_group()
    guidance.add_argument(
        "--guidance",
        type=float,
        metavar="SCALE",
        default=DEFAULTS.guidance_scale,
        help="classifier-free guidance scale: higher follows the text more closely",
    )
    guidance.add_argument(
        "--no-guidance",
        action="store_true",
        help="turn classifier-free guidance off (about twice as fast, usually worse images)",
    )
    group.add_argument(
        "--shift",
        type=float,
        metavar="ALPHA",
        default=DEFAULTS.time_shift,
        help="time shift α of the step schedule; below 1 spends more steps on coarse structure",
    )
    group.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default=DEFAULTS.sampler,
        help="ODE solver: euler (the reference), heun (2 evaluations per step, 2nd order), "
        "ab2 (Adams-Bashforth, 1 evaluation per step, 2nd order)",
    )
    _add_seed_flag(
        group,
        "random seed; the same seed and flags give the same image "
        "(default: a random seed, printed to stderr so the result can be reproduced)",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar over the steps"
    )


def _add_text_flags(parser: argparse.ArgumentParser, seed_help: str) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument(
        "--max-new-tokens", type=int, default=256, metavar="N", help="the longest answer, in tokens"
    )
    group.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        default=0.0,
        help="sampling temperature; 0 always picks the most likely token",
    )
    group.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        default=1.0,
        help="nucleus sampling: keep the most likely tokens up to this probability mass "
        "(only used when --temperature > 0; in (0, 1])",
    )
    _add_seed_flag(group, seed_help)


def _add_out_flag(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument("--out", metavar="PATH", default=default, help=what)


# ------------------------------------------------------------------------------- validation
def _check_image_flags(args: argparse.Namespace) -> None:
    if args.steps < 2:
        raise CheersError(f"--steps must be at least 2, got {args.steps}")
    if not math.isfinite(args.guidance):
        raise CheersError(f"--guidance must be a finite number, got {args.guidance}")
    if not (math.isfinite(args.shift) and args.shift > 0):
        raise CheersError(f"--shift must be a positive number, got {args.shift}")


def _check_text_flags(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise CheersError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise CheersError(f"--temperature must be 0 or more, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise CheersError(f"--top-p must be in (0, 1], got {args.top_p}")


def _guidance(args: argparse.Namespace) -> float | None:
    return None if args.no_guidance else args.guidance


def _seed(args: argparse.Namespace) -> int:
    """The seed to use; a drawn one is reported so that a good result can be made again."""
    if args.seed is not None:
        return args.seed
    seed = random.randrange(2**31)
    print(f"seed: {seed} (pass --seed {seed} to reproduce)", file=sys.stderr)
    return seed


# ------------------------------------------------------------------------------------ model
def default_model_path() -> Path:
    """The folder of the model embedded in the package, used when ``--model`` is omitted.

    Raises :class:`CheersError` when the package ships no model (no ``config.json`` there).
    """
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return DEFAULT_MODEL_DIR
    raise CheersError(
        "no model given and none is embedded in this installation; pass --model DIR with a "
        "downloaded ai9stars/Cheers folder (config.json, weights, tokenizer) or a Hub id such "
        "as --model ai9stars/Cheers"
    )


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise CheersError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CheersError("--device cuda was given but no CUDA GPU is available; use cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CheersError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device


def is_embedded(model: str | None) -> bool:
    """Whether ``model`` names the model embedded in the package (or is left out)."""
    if model is None:
        return True
    return Path(model).resolve() == DEFAULT_MODEL_DIR.resolve()


def load_pipeline(model: str | None, dtype: str | None, device: str | None) -> CheersPipeline:
    """Load the pipeline named by ``--model`` (or the embedded default) onto ``--device``."""
    from cheers.pipeline import CheersPipeline

    source = model if model is not None else str(default_model_path())
    device = _resolve_device(device)
    print(f"loading the model from {source} on {device}…", file=sys.stderr)
    if is_embedded(source):
        from cheers.demo import SHAPES_ONLY

        print(SHAPES_ONLY, file=sys.stderr)
    return CheersPipeline.from_pretrained(source, dtype=dtype, device=device)


def _pipeline(args: argparse.Namespace) -> CheersPipeline:
    return load_pipeline(args.model, args.dtype, args.device)


def _load_images(paths: Sequence[str]) -> list[Image.Image]:
    """Read the input images before the (slow) model load so that a typo fails at once."""
    from cheers.image import load_image

    return [load_image(p) for p in paths]


# ----------------------------------------------------------------------------------- output
def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe, lower-case ASCII version of ``text`` (``"image"`` if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "image"


def _is_png_path(out: str) -> bool:
    return out.lower().endswith(".png")


def _ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and parents); any failure becomes a CheersError naming --out."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CheersError(
            f"cannot create the output folder {folder}: a file is in the way; pass another --out"
        ) from err
    except OSError as err:
        raise CheersError(
            f"cannot create the output folder {folder} ({err.strerror or err}); pass another --out"
        ) from err
    if not os.access(folder, os.W_OK):
        raise CheersError(f"the output folder {folder} is not writable; pass another --out")
    return folder


def _output_paths(out: str, names: Sequence[str]) -> list[Path]:
    """Where each image goes: ``out`` itself for one image and a .png ``out``, else out/name."""
    if _is_png_path(out):
        if len(names) != 1:
            raise CheersError(
                f"--out {out} is a single .png file but {len(names)} images will be made; "
                "pass a folder instead"
            )
        path = Path(out)
        if path.is_dir():
            raise CheersError(f"--out {out} is a folder; pass a file name or a folder path")
        _ensure_folder(path.parent)
        return [path]
    folder = _ensure_folder(Path(out))
    return [folder / name for name in names]


def save_png(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` atomically: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open rather than mkstemp: mode 0o666 minus the umask, as for any saved file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheersError(f"cannot write {path} ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------- handlers
def run_generate(args: argparse.Namespace) -> int:
    """``cheers generate``: text-to-image, one PNG per image, paths printed to stdout."""
    _check_image_flags(args)
    if args.num_images < 1:
        raise CheersError(f"--num-images must be at least 1, got {args.num_images}")
    names = [
        f"{i:02d}-{slugify(prompt)}.png"
        for i, prompt in enumerate(p for p in args.prompts for _ in range(args.num_images))
    ]
    paths = _output_paths(args.out, names)
    pipe = _pipeline(args)
    images = pipe.text_to_image(
        args.prompts,
        num_inference_steps=args.steps,
        guidance_scale=_guidance(args),
        time_shift=args.shift,
        sampler=args.sampler,
        num_images_per_prompt=args.num_images,
        generator=_seed(args),
        progress=not args.no_progress,
    ).images
    for image, path in zip(images, paths, strict=True):
        print(save_png(image, path))
    return 0


def run_ask(args: argparse.Namespace) -> int:
    """``cheers ask``: answer one question about one or more images."""
    _check_text_flags(args)
    images = _load_images(args.images)
    pipe = _pipeline(args)
    answer = pipe.understand(
        images,
        args.question,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        generator=args.seed,
    )
    print(answer)
    return 0


def _chat_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }


def run_chat(args: argparse.Namespace) -> int:
    """``cheers chat``: answer PROMPT, or hold a conversation read line by line from stdin."""
    _check_text_flags(args)
    pipe = _pipeline(args)
    if args.prompt is not None:
        print(pipe.chat(args.prompt, generator=args.seed, **_chat_kwargs(args)))
        return 0
    return _chat_loop(pipe, args)


def _chat_loop(pipe: CheersPipeline, args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat with Cheers: /reset forgets the conversation, /exit or Ctrl-D quits")
    # One generator for the whole session: a seeded chat replays the same, but turns differ.
    generator = None
    if args.seed is not None:
        import torch

        generator = torch.Generator("cpu").manual_seed(args.seed)
    messages: list[dict[str, str]] = []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text == "/exit":
            break
        if text == "/reset":
            messages.clear()
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        try:
            answer = pipe.chat(messages, generator=generator, **_chat_kwargs(args))
        except CheersError as err:
            # A too-long conversation must not end the session; the turn is dropped instead.
            messages.pop()
            print(f"error: {err}", file=sys.stderr)
            continue
        messages.append({"role": "assistant", "content": answer})
        print(answer, flush=True)
    return 0


def run_edit(args: argparse.Namespace) -> int:
    """``cheers edit``: edit one image following an instruction, save it as PNG."""
    _check_image_flags(args)
    if not 0.0 < args.strength <= 1.0:
        raise CheersError(f"--strength must be in (0, 1], got {args.strength}")
    if int(args.strength * args.steps + 1e-9) < 2:
        needed = math.ceil(2 / args.strength - 1e-9)
        raise CheersError(
            f"--strength {args.strength} with --steps {args.steps} leaves fewer than 2 "
            f"denoising steps; use --steps {needed} or more"
        )
    source = _load_images([args.image])
    stem = slugify(Path(args.image).stem)
    (path,) = _output_paths(args.out, [f"{stem}-{slugify(args.instruction)}.png"])
    pipe = _pipeline(args)
    (image,) = pipe.edit(
        source[0],
        args.instruction,
        num_inference_steps=args.steps,
        guidance_scale=_guidance(args),
        time_shift=args.shift,
        strength=args.strength,
        sampler=args.sampler,
        generator=_seed(args),
        progress=not args.no_progress,
    ).images
    print(save_png(image, path))
    return 0


# ---------------------------------------------------------------------------- subcommands
def _generate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="what the image should show")
    p.add_argument(
        "--num-images",
        type=int,
        default=1,
        metavar="N",
        help="images per prompt (each from other noise)",
    )
    _add_out_flag(
        p,
        "outputs",
        "a folder for the images, named NN-prompt-words.png (existing files of the same name "
        "are replaced), or a .png file name when one image is made",
    )
    _add_image_flags(p, steps=DEFAULTS.num_inference_steps)
    _add_model_flags(p)


def _ask_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image file(s), all shown in one prompt"
    )
    p.add_argument(
        "--question", "-q", required=True, metavar="TEXT", help="what to ask about the image(s)"
    )
    _add_text_flags(
        p, "random seed for --temperature > 0 sampling (default: none, answers then vary)"
    )
    _add_model_flags(p)


def _chat_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prompt",
        nargs="?",
        metavar="PROMPT",
        help="a message to answer once (default: none, start an interactive conversation)",
    )
    _add_text_flags(
        p,
        "random seed for sampling and for the noise image the model sees in front of every "
        "text-only request; fix it for repeatable answers (default: none, answers vary)",
    )
    _add_model_flags(p)


def _edit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the image file to edit")
    p.add_argument(
        "--instruction", "-i", required=True, metavar="TEXT", help="what to change in the image"
    )
    p.add_argument(
        "--strength",
        type=float,
        metavar="S",
        default=0.9,
        help="how far from the source the edit may go, in (0, 1]: 1 starts from pure noise, "
        "lower keeps more of the source and runs only that share of --steps",
    )
    _add_out_flag(
        p,
        "outputs",
        "a .png file name, or a folder for <image name>-<instruction words>.png "
        "(an existing file of that name is replaced)",
    )
    _add_image_flags(p, steps=DEFAULTS.num_inference_steps)
    _add_model_flags(p)


def _demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="cheers-demo", metavar="DIR", help="folder for index.html and the images"
    )
    p.add_argument("--steps", type=int, default=20, metavar="N", help="denoising steps per image")
    p.add_argument(
        "--guidance", type=float, default=3.0, metavar="SCALE", help="classifier-free guidance"
    )
    _add_seed_flag(p, "random seed of the generated images")
    _add_model_flags(p)


def run_demo(args: argparse.Namespace) -> int:
    """``cheers demo``: generate, answer and edit on the Shapes world; print the HTML page."""
    from cheers.demo import run_demo as demo
    from cheers.demo import write_html

    if args.steps < 2:
        raise CheersError(f"--steps must be at least 2, got {args.steps}")
    out = _ensure_folder(Path(args.out))
    pipe = _pipeline(args)
    result = demo(
        pipe, seed=0 if args.seed is None else args.seed, steps=args.steps, guidance=args.guidance
    )
    for name, seconds in result.timings.items():
        print(f"{name}: {seconds:.2f} s", file=sys.stderr)
    right, total = result.score
    print(
        f"{right} of {total} right (judged by the Shapes detector and the true answers)",
        file=sys.stderr,
    )
    embedded = is_embedded(args.model)
    name = "the embedded default model" if embedded else str(args.model)
    print(write_html(result, out, name, shapes_only=embedded))
    return 0


def _eval_flags(p: argparse.ArgumentParser) -> None:
    from cheers.evaluation.cli import add_eval_flags

    add_eval_flags(p)


def run_eval(args: argparse.Namespace) -> int:
    """Run a Shapes benchmark (see :mod:`cheers.evaluation.cli`)."""
    from cheers.evaluation.cli import run_eval as evaluate

    return evaluate(args)


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="the training config (a TOML file)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the config's output_dir from its latest checkpoint",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume) the run described by a TOML config; prints the final model folder."""
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer

    config = TrainConfig.from_toml(args.config)
    if args.no_progress:
        config.run.progress = False
    final = Trainer(config, resume=args.resume).run()
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, its --help description, its flags and its handler."""

    help: str
    description: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, in the order ``cheers --help`` lists them. Add new ones here.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="show every ability of the model on one HTML page (no download needed)",
        description=(
            "Generate images for a few prompts, answer questions about a few pictures and\n"
            "edit one, then write an HTML page with the results and timings; its path is\n"
            "printed. Without --model it uses the small model embedded in the package,\n"
            "trained on the procedural Shapes world.\n\n"
            "examples:\n"
            "  cheers demo\n"
            "  cheers demo --out my-demo --seed 3"
        ),
        add_flags=_demo_flags,
        run=run_demo,
    ),
    "generate": Command(
        help="make images from a text description",
        description=(
            "Generate images from text prompts and save them as PNG files; the paths are\n"
            "printed. Each prompt gets --num-images images.\n\n"
            "examples:\n"
            '  cheers generate "a red fox in the snow" --model ./Cheers --seed 0\n'
            '  cheers generate "a cat" "a dog" --num-images 2 --steps 40 --out pets/\n'
            '  cheers generate "a lighthouse at dusk" --out lighthouse.png'
        ),
        add_flags=_generate_flags,
        run=run_generate,
    ),
    "ask": Command(
        help="answer a question about one or more images",
        description=(
            "Ask a question about images and print the answer. Several images are all put\n"
            "into the same prompt, so the question can compare them.\n\n"
            "examples:\n"
            '  cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers\n'
            '  cheers ask a.png b.png -q "What differs between the two images?"'
        ),
        add_flags=_ask_flags,
        run=run_ask,
    ),
    "chat": Command(
        help="talk with the model in plain text",
        description=(
            "Text conversation. With PROMPT, print one answer. Without it, read one message\n"
            "per line from stdin and print each answer, keeping the conversation so far;\n"
            "/reset forgets it, /exit or end of input (Ctrl-D) quits.\n\n"
            "examples:\n"
            '  cheers chat "Write a haiku about autumn." --model ./Cheers\n'
            "  cheers chat --model ./Cheers --temperature 0.7 --seed 1"
        ),
        add_flags=_chat_flags,
        run=run_chat,
    ),
    "edit": Command(
        help="change an image following an instruction",
        description=(
            "Edit an image following a text instruction and save the result as PNG; the\n"
            "path is printed.\n\n"
            "examples:\n"
            '  cheers edit photo.jpg --instruction "make it winter" --model ./Cheers\n'
            '  cheers edit cat.png -i "turn the cat into a tiger" --strength 0.8 --out tiger.png'
        ),
        add_flags=_edit_flags,
        run=run_edit,
    ),
    "eval": Command(
        help="score a model on the Shapes benchmarks (generation, questions, editing)",
        description=(
            "Run a CPU benchmark on the procedural Shapes world and write report.json and\n"
            "grid.png into --out: shapes-gen (GenEval-style prompts judged by a detector),\n"
            "shapes-vqa (one-word questions) and shapes-edit (instructions).\n\n"
            "examples:\n"
            "  cheers eval shapes-gen --out reports/gen\n"
            "  cheers eval shapes-vqa --model ./my-model --out reports/vqa --n 200"
        ),
        add_flags=_eval_flags,
        run=run_eval,
    ),
    "train": Command(
        help="train or fine-tune a model from a TOML recipe",
        description=(
            "Run the training stages of a config file: data (released JSONL format), model\n"
            "initialisation, stages and run settings (see docs/training.md). Checkpoints go\n"
            "to <output_dir>/checkpoints; metrics to <output_dir>/metrics.csv.\n\n"
            "examples:\n"
            "  cheers train configs/finetune.toml\n"
            "  cheers train configs/finetune.toml --resume\n"
            "  torchrun --nproc-per-node 8 -m cheers train configs/finetune.toml"
        ),
        add_flags=_train_flags,
        run=run_train,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``cheers`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="cheers",
        formatter_class=_HelpFormatter,
        description=(
            "Cheers: one model that understands, generates and edits images.\n\n"
            "Every command needs the model weights: pass --model with a downloaded\n"
            "ai9stars/Cheers folder or the Hub id ai9stars/Cheers (it may be left out\n"
            "when a model is embedded in the package). Run `cheers COMMAND --help` for\n"
            "the flags of a command.\n\n"
            "examples:\n"
            '  cheers generate "a red fox in the snow" --model ./Cheers --seed 0\n'
            '  cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers\n'
            '  cheers chat "Tell me a joke." --model ./Cheers\n'
            '  cheers edit photo.jpg --instruction "make it winter" --model ./Cheers'
        ),
    )
    from cheers import __version__

    parser.add_argument("--version", action="version", version=f"cheers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=_HelpFormatter,
        )
        command.add_flags(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``cheers`` command line; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            raise UsageError(f"no command given; choose one of {', '.join(COMMANDS)}")
        if getattr(args, "model", "") is None:
            # Resolved before any handler work so a missing model fails before outputs exist.
            args.model = str(default_model_path())
        return COMMANDS[args.command].run(args)
    except SystemExit as stop:  # --help and --version end parsing this way
        return stop.code if isinstance(stop.code, int) else 0
    except CheersError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
