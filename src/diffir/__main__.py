"""``python -m diffir ...`` (also what ``torchrun -m diffir train ...`` runs)."""

import sys

from diffir.cli import main

sys.exit(main())
