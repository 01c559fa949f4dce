"""The errors assay explains in one line: bad input, bad settings, or a state it cannot work in.

The command line prints these as `error: <message>` (exit code 2) and anything else, a bug, with
its traceback (`assay --debug ...` shows the traceback of these too). Every one of them is also
the builtin exception a caller would expect (a `ValueError`, a `FileNotFoundError` or an
`ImportError`), so code written against the builtins keeps working.
"""

from __future__ import annotations


class AssayError(Exception):
    """An error whose message says all a user needs: what, where, and what to do."""


class InputError(AssayError, ValueError):
    """Bad input data: a corpus record, a target file, a saved model, a score table."""


class ConfigError(AssayError, ValueError):
    """Bad settings: a recipe, a step's options, a function's arguments."""


class StateError(AssayError, ValueError):
    """What is on disk does not allow it: a folder holds other outputs, is being written by
    another process, cannot be written, or an earlier result is missing."""


class MissingError(AssayError, FileNotFoundError):
    """An input that does not exist: a corpus file, a recipe, a model folder."""


class DependencyError(AssayError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
