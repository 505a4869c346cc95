"""``cheers chat``: answer one message, or hold a conversation read line by line from stdin."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cheers.cli import flags
from cheers.errors import CheersError

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

NAME = "chat"
HELP = "talk with the model in plain text"
DESCRIPTION = """\
Text conversation. With PROMPT, print one answer. Without it, read one message
per line from stdin and print each answer, keeping the conversation so far;
/reset forgets it, /exit or end of input (Ctrl-D) quits.

examples:
  cheers chat "Write a haiku about autumn." --model ./Cheers
  cheers chat --model ./Cheers --temperature 0.7 --seed 1"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prompt",
        nargs="?",
        metavar="PROMPT",
        help="a message to answer once (default: none, start an interactive conversation)",
    )
    flags.add_text_flags(
        p,
        "random seed for sampling and for the noise image the model sees in front of every "
        "text-only request; fix it for repeatable answers (default: none, answers vary)",
    )
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_text_flags(args)
    pipe = flags.pipeline(args)
    if args.prompt is not None:
        print(pipe.chat(args.prompt, generator=args.seed, **flags.decoding(args)))
        return 0
    return conversation(pipe, args)


def conversation(pipe: CheersPipeline, args: argparse.Namespace) -> int:
    """The interactive loop: one message per stdin line, the conversation kept between turns."""
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
            answer = pipe.chat(messages, generator=generator, **flags.decoding(args))
        except CheersError as err:
            # A too-long conversation must not end the session; the turn is dropped instead.
            messages.pop()
            print(f"error: {err}", file=sys.stderr)
            continue
        messages.append({"role": "assistant", "content": answer})
        print(answer, flush=True)
    return 0
