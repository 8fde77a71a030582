"""Run a study: `python run_study.py studies/scaling.yaml [--dry-run] [--jobs N] ...`.

The thin entry point the design names; the command line lives in chargpt.study.cli.
"""

import sys

from chargpt.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
