"""User-facing error types: every message names the file and dotted field path it is about.

The CLI prints these without a traceback (they describe the user's input, not a bug), so each one must
say what was wrong, where, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AudiostyleError(Exception):
    """Base class for errors caused by user input (files, YAML, data); printed without a traceback."""


class ConfigError(AudiostyleError):
    """A problem in an experiment YAML, located by file and dotted field path."""

    def __init__(self, message: str, *, path: str = "", file: str | None = None, hint: str = ""):
        self.field_path = path
        self.file = file
        self.hint = hint
        self.reason = message
        where = f"{file}: " if file else ""
        field = f"{path}: " if path else ""
        text = f"{where}{field}{message}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)

    def located(self, file: str | None) -> ConfigError:
        """The same error, attributed to `file` when it has no file yet."""
        if self.file or not file:
            return self
        return ConfigError(self.reason, path=self.field_path, file=file, hint=self.hint)


class DataError(AudiostyleError):
    """A problem with an audio file, shard, manifest or statistics file, naming the file."""


class CheckpointError(AudiostyleError):
    """A missing, truncated or inconsistent checkpoint or bundle, naming the file."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix with the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
