"""Counting task runs outside the database, in files that several worker processes append to."""

import os


def append_line(path: str, line: str) -> None:
    """Append ``line`` and a newline to the file at ``path``, creating it if missing.

    One os.write of a short line on an O_APPEND file is atomic, so lines from
    several processes never interleave.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)
