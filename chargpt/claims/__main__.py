"""`python -m chargpt.claims`: the claims command line."""

from chargpt.claims.cli import main

raise SystemExit(main())
