"""Reading back what the demo's tasks wrote: word-count reports and mail files."""

import email
import json
from email.message import Message
from pathlib import Path

#: The line that Django's file-based e-mail backend writes after each message.
MAIL_SEPARATOR = "-" * 79


def load_reports(report_dir: str | Path) -> list[dict]:
    """Return the word-count reports in ``report_dir``, sorted by file name; none if it is missing."""
    folder = Path(report_dir)
    if not folder.is_dir():
        return []
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def load_mail(mail_dir: str | Path) -> list[Message]:
    """Return every message that Django's file-based e-mail backend wrote to ``mail_dir``."""
    folder = Path(mail_dir)
    if not folder.is_dir():
        return []

    messages = []
    for path in sorted(folder.iterdir()):
        # One file contains every message sent through one connection.
        for chunk in path.read_text(encoding="utf-8").split(f"\n{MAIL_SEPARATOR}\n"):
            if chunk.strip():
                messages.append(email.message_from_string(chunk))
    return messages


def read_counter(counter_file: str | Path) -> int:
    """Return the number stored in ``counter_file``, or 0 if the file does not exist."""
    path = Path(counter_file)
    return int(path.read_text(encoding="utf-8")) if path.exists() else 0
