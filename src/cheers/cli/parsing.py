"""The argparse pieces every command shares: the parser class, its help format, usage errors."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from cheers.errors import CheersError

#: Exit code for user errors (bad flags, missing files), as argparse uses for usage errors.
EXIT_USAGE = 2


class UsageError(CheersError):
    """A command line that argparse cannot parse (unknown flag, value of the wrong type)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
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


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become :class:`UsageError` so ``main`` reports them."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{message} (run `{self.prog} --help` for the flags)")
