"""Sphinx configuration for the background_task documentation.

Build it as ``python3 dev.py test`` does, from the repository root::

    pip install -e ".[test,docs]"
    sphinx-build -W --keep-going -b html docs build/docs/html
    sphinx-build -W --keep-going -b doctest docs build/docs/doctest

The specification chapter is generated from spec/ by the extension in
``_ext/spec_docs.py``, and shows the newest conformance reports found in
build/conformance/ (set BACKGROUND_TASK_CONFORMANCE_DIR to read another
folder). The build fetches nothing from the network.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# The spec modules and autodoc import background_task and spec from this
# checkout, with the specification's own Django settings.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ["DJANGO_SETTINGS_MODULE"] = "spec.settings"
# The documentation describes SQLite runs; a PostgreSQL URL in the caller's
# environment must not make the build depend on a server.
os.environ.pop("BACKGROUND_TASK_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from background_task import __version__  # noqa: E402

project = "django-background-queue"
author = "The django-background-queue authors"
copyright = "the django-background-queue authors"  # noqa: A001 - Sphinx's name for it
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "spec_docs",
    "state_diagram",
    "command_options",
    "reliability_table",
]

exclude_patterns = ["_build"]
nitpicky = True
# Names that autodoc meets in signatures and that no page of this site documents.
nitpick_ignore_regex = [
    (r"py:.*", r"(django|datetime|typing|collections\.abc|logging|pathlib)\..*"),
]

html_theme = "furo"
html_title = f"django-background-queue {release}"
html_static_path = ["_static"]

# The specification and its conformance reports (see _ext/spec_docs.py).
spec_dir = str(ROOT / "spec")
spec_conformance_dir = os.environ.get("BACKGROUND_TASK_CONFORMANCE_DIR", str(ROOT / "build" / "conformance"))

# Examples run by the doctest builder get an empty test database, created on
# first use and removed when the build ends.
doctest_global_setup = "import docs_database; docs_database.use_test_database()"
