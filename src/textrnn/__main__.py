"""`python -m textrnn ...`: the same commands as the `textrnn` script (dvc.yaml runs stages this way)."""

import sys

from textrnn.cli import main

sys.exit(main())
