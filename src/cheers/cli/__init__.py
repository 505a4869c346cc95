"""The ``cheers`` command line: one module a command, over shared flag groups.

    cheers generate "a red fox in the snow" --model ./Cheers --seed 0
    cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers
    cheers chat --model ./Cheers
    cheers edit photo.jpg --instruction "make it winter" --model ./Cheers

Each command is a module with ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_flags(parser)`` and
``run(args) -> exit code``, listed in :data:`COMMANDS`; shared flags live in
:mod:`cheers.cli.flags`. Bad input never ends in a traceback: :func:`main` prints
``error: <message>`` to stderr and returns exit code 2.
"""

from __future__ import annotations

import sys
from types import ModuleType

from cheers.cli import ask, chat, demo, edit, evaluate, generate, lora, quantize, serve, train
from cheers.cli.parsing import EXIT_USAGE, HelpFormatter, Parser, UsageError
from cheers.errors import CheersError
from cheers.loading import default_model_path

__all__ = ["COMMANDS", "EXIT_USAGE", "UsageError", "build_parser", "main"]

#: Every command, in the order ``cheers --help`` lists them. Add new ones here.
COMMANDS: tuple[ModuleType, ...] = (
    demo,
    generate,
    ask,
    chat,
    edit,
    evaluate,
    train,
    lora,
    quantize,
    serve,
)

_DESCRIPTION = """\
Cheers: one model that understands, generates and edits images.

Every command needs the model weights: pass --model with a downloaded
ai9stars/Cheers folder or the Hub id ai9stars/Cheers (it may be left out
when a model is embedded in the package). Run `cheers COMMAND --help` for
the flags of a command.

examples:
  cheers generate "a red fox in the snow" --model ./Cheers --seed 0
  cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers
  cheers chat "Tell me a joke." --model ./Cheers
  cheers edit photo.jpg --instruction "make it winter" --model ./Cheers"""


def build_parser() -> Parser:
    """The ``cheers`` parser with one subparser per module of :data:`COMMANDS`."""
    from cheers import __version__

    parser = Parser(prog="cheers", formatter_class=HelpFormatter, description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cheers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.NAME,
            help=command.HELP,
            description=command.DESCRIPTION,
            formatter_class=HelpFormatter,
        )
        command.add_flags(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``cheers`` command line; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    by_name = {command.NAME: command for command in COMMANDS}
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            raise UsageError(f"no command given; choose one of {', '.join(by_name)}")
        if getattr(args, "model", "") is None:
            # Resolved before any handler work so a missing model fails before outputs exist.
            args.model = str(default_model_path())
        return by_name[args.command].run(args)
    except SystemExit as stop:  # --help and --version end parsing this way
        return stop.code if isinstance(stop.code, int) else 0
    except (CheersError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
