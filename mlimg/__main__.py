"""`python -m mlimg ...` runs the `mlimg` command line."""
from .cli import main

raise SystemExit(main())
