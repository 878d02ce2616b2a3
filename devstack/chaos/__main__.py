"""`python -m devstack.chaos [options]`: see devstack/chaos/__init__.py and `--help`."""

from devstack.chaos.run import main

raise SystemExit(main())
