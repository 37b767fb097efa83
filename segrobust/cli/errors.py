"""How the command line fails: one line, exit code 2 for what a user can fix."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from segrobust.fileio import UnreadableFileError, check_regular_file
from segrobust.utils import error_line

__all__ = ["UsageError", "check_exists", "check_file", "is_expected", "one_line"]


class UsageError(Exception):
    """A bad command-line argument or file, reported as one line with exit code 2."""


def one_line(error: BaseException) -> str:
    """One line that says what went wrong: the file for OS errors, the class when the message is empty."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        lines = lines[-1:]  # a DataLoader worker's error: its last line is the original one
    if not lines:
        return type(error).__name__
    text = lines[0]
    return text if isinstance(error, (ValueError, OSError, UsageError)) else f"{type(error).__name__}: {text}"


def is_expected(error: BaseException) -> bool:
    """Failures a user can cause and fix (bad files, bad values), as opposed to bugs in segrobust.

    segrobust's own error classes (ModelLoadError, DataError,
    ResumeMismatchError, UnreadableFileError) are ValueErrors; PIL's
    undecodable-image errors are OSErrors, its decompression-bomb error is not.
    """
    if isinstance(error, (UsageError, ValueError, OSError)):
        return True
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(error, Image.DecompressionBombError)


def check_exists(flag: str, path: str) -> Path:
    """``path`` as given (a file or folder), or a one-line error naming ``flag`` (missing, looping link, unreadable)."""
    try:
        Path(path).expanduser().stat()
    except FileNotFoundError:
        raise UsageError(f"{flag} {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"{flag} {path}: {error.strerror or error_line(error)}") from None
    return Path(path)


def check_file(flag: str, path: str, max_bytes: Optional[int] = None) -> Path:
    """``path`` if it is a readable regular file (no FIFO, socket, device or folder) of at most ``max_bytes``."""
    try:
        return check_regular_file(path, flag, max_bytes)
    except UnreadableFileError as error:
        raise UsageError(str(error)) from None
