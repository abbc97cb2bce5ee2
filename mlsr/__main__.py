"""`python -m mlsr ...`: see mlsr/cli/."""

from mlsr.cli import main

raise SystemExit(main())
