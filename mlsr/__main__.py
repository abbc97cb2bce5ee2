"""`python -m mlsr ...`: see mlsr/cli.py."""

from mlsr.cli import main

raise SystemExit(main())
