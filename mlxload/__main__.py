"""``python -m mlxload`` runs the command line."""

import sys

from mlxload.cli import main

sys.exit(main())
