"""`python -m dashboards [--out DIR]`: what `make generate` runs."""

from dashboards.build import main

raise SystemExit(main())
