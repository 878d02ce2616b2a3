"""`python -m devstack.bench [options]`: see devstack/bench/__init__.py and `--help`."""

from devstack.bench.run import main

raise SystemExit(main())
