"""python -m mlimg.bench: the same as `mlimg bench`."""
import sys

from . import main

sys.exit(main())
