"""Allow `python -m nixherd`."""

from nixherd.cli import main

raise SystemExit(main())
