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
