"""``cheers chat``: answer one message, or hold a conversation of text and images read line by
line from stdin (commands draw, edit, attach and save images)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cheers.cli import flags, output
from cheers.errors import CheersError
from cheers.pipeline.arguments import MAX_NEW_TOKENS

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline
    from cheers.pipeline.conversation import Conversation, Reply

NAME = "chat"
HELP = "talk with the model: text, and images it reads, draws and edits"
COMMANDS = """\
commands (one per line; anything else is a message):
  /attach PATH        show an image with your next message
  /draw PROMPT        draw an image; it joins the conversation
  /edit [#N] TEXT     edit the last image (or image N) as TEXT asks
  /save [#N] PATH     write the last image (or image N) to PATH
  /images             list the conversation's images
  /reset              forget the conversation
  /exit               quit (as does end of input, Ctrl-D)"""
DESCRIPTION = f"""\
Conversation with the model. With PROMPT, print one answer. Without it, read one
message per line from stdin and print each answer, keeping the conversation so
far, its images included: ask about an attached or drawn image, draw, edit.

{COMMANDS}

Images are numbered from 1 in the order the conversation shows them; when old
turns are dropped to fit the model's context, their images go with them.

examples:
  cheers chat "Write a haiku about autumn." --model ./Cheers
  cheers chat --model ./Cheers --temperature 0.7 --seed 1 --out drawings"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prompt",
        nargs="?",
        metavar="PROMPT",
        help="a message to answer once (default: none, start an interactive conversation)",
    )
    flags.add_text_flags(
        p,
        "random seed for sampling, the drawings and the noise image the model sees in front "
        "of every text-only request; fix it for repeatable answers (default: none, they vary)",
    )
    flags.add_image_flags(p, steps=30, seed=False)
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help="how far /edit moves from the image, in (0, 1] (default: the authors' 0.9)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write every drawn or edited image to DIR as image-N.png (default: only "
        "when you /save it)",
    )
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_text_flags(args)
    flags.check_image_flags(args)
    if args.strength is not None and not 0.0 < args.strength <= 1.0:
        raise CheersError(f"--strength must be in (0, 1], got {args.strength}")
    pipe = flags.pipeline(args)
    if args.prompt is not None:
        print(pipe.chat(args.prompt, generator=args.seed, **flags.decoding(args)))
        return 0
    return conversation(pipe, args)


def conversation(pipe: CheersPipeline, args: argparse.Namespace) -> int:
    """The interactive loop: one message or command per stdin line, the conversation kept
    between turns. A failed turn leaves the conversation as it was.

    When the conversation outgrows the model's context its oldest turns are dropped (and the
    user is told), so a long session keeps working instead of failing on every later turn.
    """
    from cheers.pipeline.conversation import Conversation

    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chat with Cheers\n{COMMANDS}")
    # One generator for the whole session: a seeded chat replays the same, but turns differ.
    generator = None
    if args.seed is not None:
        import torch

        generator = torch.Generator("cpu").manual_seed(args.seed)
    decoding = flags.decoding(args)
    image_kwargs = {
        "num_inference_steps": args.steps,
        "guidance_scale": flags.guidance(args),
        "time_shift": args.shift,
        "sampler": args.sampler,
    }
    if args.strength is not None:
        image_kwargs["strength"] = args.strength
    chat = Conversation(
        pipe,
        max_new_tokens=decoding.pop("max_new_tokens") or MAX_NEW_TOKENS,
        chat_kwargs={**decoding, "generator": generator},
        image_kwargs=image_kwargs,
    )
    session = Session(chat, args.out)
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            break
        try:
            session.handle(line.strip())
        except CheersError as err:
            # The turn is not kept, so the next message starts from the same conversation.
            print(f"error: {err} (/reset starts a new conversation)", file=sys.stderr)
    return 0


class Session:
    """What the interactive loop does with each line: commands and messages."""

    def __init__(self, chat: Conversation, out: str | None) -> None:
        self.chat = chat
        self.out = out
        self.attached: list = []  # images waiting for the next message
        self.written = 0  # images written to --out so far

    def handle(self, text: str) -> None:
        if not text:
            return
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        if command == "/reset":
            self.chat.reset()
            self.attached = []
        elif command == "/attach":
            self.attached.append(flags.load_images([self.need(rest, "/attach PATH")])[0])
            print(f"(attached {rest}; it goes with your next message)", file=sys.stderr)
        elif command == "/images":
            for i, image in enumerate(self.chat.images, 1):
                print(f"#{i}: {image.width}x{image.height}")
        elif command == "/save":
            index, path = self.numbered(rest, "/save [#N] PATH")
            image = self.image(index)
            print(output.save_image(image, Path(path)))
        elif command == "/draw":
            self.show(self.chat.draw(self.need(rest, "/draw PROMPT")))
        elif command == "/edit":
            index, instruction = self.numbered(rest, "/edit [#N] INSTRUCTION")
            self.image(index)  # a clear error for a wrong number
            self.show(self.chat.edit(instruction, image=-1 if index is None else index))
        elif command.startswith("/"):
            raise CheersError(f"unknown command {command}\n{COMMANDS}")
        else:
            reply = self.chat.send(text, images=self.attached)
            self.attached = []
            self.show(reply)

    def show(self, reply: Reply) -> None:
        if reply.dropped_turns:
            print(
                f"(the oldest {reply.dropped_turns} turn(s) were dropped to fit the model's "
                "context; /reset starts afresh)",
                file=sys.stderr,
            )
        if reply.answer or reply.image is None:
            print(reply.answer, flush=True)
        if reply.image is not None:
            number = len(self.chat.images)
            line = f"[image #{number}, {reply.image.width}x{reply.image.height}]"
            if self.out is not None:
                self.written += 1
                path = output.output_paths(self.out, [f"image-{self.written}.png"])[0]
                line += f" {output.save_image(reply.image, path)}"
            print(line, flush=True)

    def image(self, index: int | None):
        images = self.chat.images
        if not images:
            raise CheersError("the conversation holds no image yet; /draw or /attach one")
        if index is None:
            return images[-1]
        if not 0 <= index < len(images):
            raise CheersError(
                f"there is no image #{index + 1}: the conversation holds {len(images)} "
                "(see /images)"
            )
        return images[index]

    @staticmethod
    def need(rest: str, usage: str) -> str:
        if not rest:
            raise CheersError(f"usage: {usage}")
        return rest

    def numbered(self, rest: str, usage: str) -> tuple[int | None, str]:
        """An optional leading ``#N`` (1-based) and the rest of the line."""
        index = None
        if rest.startswith("#"):
            number, _, rest = rest[1:].partition(" ")
            if not number.isdigit() or int(number) < 1:
                raise CheersError(f"#{number} is not an image number; usage: {usage}")
            index = int(number) - 1
        return index, self.need(rest.strip(), usage)
