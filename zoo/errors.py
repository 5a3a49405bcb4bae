"""Errors that are the user's to fix: the CLI prints them as one line (no traceback) and exits with 2.

Raise `UserError` (or a subclass) with a message that names what is wrong and how to fix it. Anything
else that escapes is a bug in zoo and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import warnings


class UserError(ValueError):
    """Bad input: a setting, a path, a dataset or a device the user can change. Subclasses ValueError so
    that library callers catching ValueError keep working."""


class ConfigError(UserError):
    """A hyperparameter or run setting outside its type or range (names the setting, value, allowed
    range, and the file/section or flag it came from)."""


class DataError(UserError):
    """A dataset, env or checkpoint that does not fit (names the field, index and the fix)."""


class Interrupted(Exception):
    """Training stopped on a signal (Ctrl-C, SIGTERM) after saving what it could: the message is the one line
    that says where the run is and how to resume it. The CLI prints it and exits with 128 + the signal's number
    (130 for SIGINT, 143 for SIGTERM), as a shell reports a process a signal ended."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + int(signum)



_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn attributed to the user's line: the first caller outside zoo (and outside the libraries
    zoo's classes run through: SB3's base classes, torch), so that the printed file:line is the call that
    chose the setting (e.g. `TD3BC(..., precision="bfloat16")`), not zoo's own code."""
    libraries = [_PACKAGE] + [
        os.path.dirname(os.path.abspath(module.__file__))
        for name in ("stable_baselines3", "torch")
        if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
    ]
    level, frame = 2, sys._getframe(1)  # stacklevel 2: warn's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(tuple(libraries)):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
