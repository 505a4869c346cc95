"""``cheers chat``: answer one message, or hold a conversation read line by line from stdin."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cheers.arguments import MAX_NEW_TOKENS
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
    """The interactive loop: one message per stdin line, the conversation kept between turns.

    When the conversation outgrows the model's context its oldest turns are dropped (and the
    user is told), so a long session keeps working instead of failing on every later turn.
    """
    from cheers.conversation import Conversation

    interactive = sys.stdin.isatty()
    if interactive:
        print("chat with Cheers: /reset forgets the conversation, /exit or Ctrl-D quits")
    # One generator for the whole session: a seeded chat replays the same, but turns differ.
    generator = None
    if args.seed is not None:
        import torch

        generator = torch.Generator("cpu").manual_seed(args.seed)
    decoding = flags.decoding(args)
    chat = Conversation(
        pipe,
        max_new_tokens=decoding.pop("max_new_tokens") or MAX_NEW_TOKENS,
        chat_kwargs={**decoding, "generator": generator},
    )
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
            chat.reset()
            continue
        if not text:
            continue
        try:
            reply = chat.send(text)
        except CheersError as err:
            # The turn is not kept, so the next message starts from the same conversation.
            print(f"error: {err} (/reset starts a new conversation)", file=sys.stderr)
            continue
        if reply.dropped_turns:
            print(
                f"(the oldest {reply.dropped_turns} turn(s) were dropped to fit the model's "
                "context; /reset starts afresh)",
                file=sys.stderr,
            )
        print(reply.answer, flush=True)
    return 0
