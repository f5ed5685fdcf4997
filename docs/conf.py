"""Sphinx configuration for the background_task documentation.

Build with ``pip install -e ".[docs]"`` and then
``sphinx-build -b html docs docs/_build/html``.
"""

import sys
from pathlib import Path

# autodoc, once pages use it, imports background_task from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from background_task import __version__  # noqa: E402

project = "django-background-queue"
author = "The django-background-queue authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions: list[str] = []
exclude_patterns = ["_build"]
html_theme = "furo"
