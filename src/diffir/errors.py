"""Exceptions with one-line, actionable messages.

Every error a user can cause (bad file, wrong key, unknown model name, bad config) is raised as a
:class:`DiffIRError`.  The CLI prints ``diffir: error: <message>`` for these and never a traceback.
"""

from __future__ import annotations


class DiffIRError(Exception):
    """Base class of user-facing errors.  ``str(err)`` is a single line naming the cause and the fix."""


class CheckpointError(DiffIRError, ValueError):
    """A checkpoint cannot be read, recognised or loaded."""


class ConfigError(DiffIRError, ValueError):
    """A configuration (YAML, CLI override, model preset) is invalid."""


class ImageError(DiffIRError, ValueError):
    """An image or mask cannot be read, written or combined."""


# Control characters (newline, tab, ESC, ...) and bidirectional overrides in a file name or a library's message
# would break the one-line promise or let a crafted name rewrite the terminal: they are shown escaped.
_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def one_line(text: object) -> str:
    """``text`` as one printable line: control and bidi-override characters escaped (``\\n``, ``\\t``, ``\\x1b``)."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out).strip()


def describe_os_error(exc: OSError, path: object = None) -> str:
    """One line for a failed file operation, naming the file: 'permission denied', 'no space left', ..."""
    import errno

    name = path if path is not None else (exc.filename if exc.filename is not None else "")
    reasons = {
        errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded", errno.ENOENT: "no such file or folder",
        errno.EROFS: "read-only file system",
        errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "a part of the path is not a folder",
        errno.ENAMETOOLONG: "file name too long",
    }
    reason = reasons.get(exc.errno) or exc.strerror or str(exc)
    fixes = {
        errno.EACCES: "check the file's permissions", errno.EPERM: "check the file's permissions",
        errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "write elsewhere",
    }
    fix = fixes.get(exc.errno)
    text = f"{name}: {reason}" if name != "" else reason
    return one_line(f"{text}; {fix}" if fix else text)


def describe_failure(exc: BaseException) -> str:
    """What went wrong restoring one image, in words: out of memory (with the fix), our own errors as they are,
    OS errors through :func:`describe_os_error`, anything else with its type (a bug)."""
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        return "out of CPU memory; restore it with a smaller tile (--tile N, or --tile auto)"
    if isinstance(exc, DiffIRError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return f"{type(exc).__name__}: {exc}"


def print_warning(message, category=None, filename=None, lineno=None, file=None, line=None) -> None:  # noqa: ARG001
    """Print a warning as one ``diffir: warning:`` line on stderr; usable as ``warnings.showwarning``.

    Through tqdm, so an active progress bar is redrawn below the line instead of being broken by it.
    """
    import sys

    from tqdm.auto import tqdm

    tqdm.write(f"diffir: warning: {one_line(message)}", file=sys.stderr)
