#!/usr/bin/env python3
"""Run Django management commands for the demo project."""

import os
import sys
from pathlib import Path


def main() -> None:
    """Run the management command named on the command line."""
    # The demo runs from a repository checkout where background_task may not be
    # installed, so the repository root goes on the path after this folder.
    repository_root = str(Path(__file__).resolve().parent.parent)
    if repository_root not in sys.path:
        sys.path.append(repository_root)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
