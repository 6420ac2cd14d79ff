"""mlimg: the .mlimg image format, machine-learned image compression as a Pillow plugin.

    import mlimg            # registers the MLIMG format with Pillow
    from PIL import Image
    Image.open("photo.png").save("photo.mlimg", method="raw")
    Image.open("photo.mlimg").load()

Importing mlimg is light: torch, scikit-learn, numba and constriction are
imported only by the methods that need them, when they run.
"""
from __future__ import annotations

from .plugin import DEFAULT_METHOD, EXTENSION, FORMAT, MIME, register

__version__ = "0.1.0"
__all__ = ["DEFAULT_METHOD", "EXTENSION", "FORMAT", "MIME", "register", "__version__"]

register()
