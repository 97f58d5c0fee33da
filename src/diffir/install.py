"""How to install an optional extra, said the same way everywhere.

The distribution is ``diffir-toolkit`` (``diffir`` on PyPI is an unrelated project); the import name and the
command are ``diffir``.
"""

from __future__ import annotations

DISTRIBUTION = "diffir-toolkit"


def pip_extra(extra: str) -> str:
    """The pip line that adds ``extra`` (e.g. ``train``), for a package install and for a checkout."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
