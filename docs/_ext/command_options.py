"""Document a Django management command's options from its own argparse parser.

``.. django-command-options:: process_tasks`` builds the command's parser the
way ``manage.py`` does and writes one ``.. option::`` entry per option that
the command adds, with its help text, choices and default, followed by the
command's complete ``--help`` output. The page therefore changes whenever
the command's options or help texts change, and never disagrees with them.
Options are linkable as :option:`process_tasks --sleep`.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
from contextlib import contextmanager

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: Characters with a meaning in reST inline markup, escaped in help texts.
MARKUP = re.compile(r"([\\`*_|\[\]<>])")

HELP_WIDTH = "88"


def escape(text: str) -> str:
    """Escape ``text`` for reST, keeping "--" from becoming a dash."""
    return MARKUP.sub(r"\\\1", text).replace("--", "-\\-")


@contextmanager
def help_width():
    """Fix argparse's line width, which it takes from COLUMNS, so the help output does not depend on the terminal."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def command_parsers(name: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, str]:
    """Return the command's parser, the parser every command has, and the app that provides the command."""
    from django.core.management import get_commands, load_command_class
    from django.core.management.base import BaseCommand

    app = get_commands()[name]
    command = load_command_class(app, name)
    with help_width():
        parser = command.create_parser("manage.py", name)
        common = BaseCommand().create_parser("manage.py", name)
    return parser, common, app


def command_file(name: str) -> str:
    """Return the source file of the command ``name``."""
    from django.core.management import get_commands, load_command_class

    return inspect.getsourcefile(type(load_command_class(get_commands()[name], name)))


def own_actions(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> list[argparse.Action]:
    """Return the options that the command itself adds, in the order it adds them."""
    shared = {option for action in common._actions for option in action.option_strings}
    return [
        action for action in parser._actions
        if action.option_strings and not set(action.option_strings) & shared
    ]


def invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """Return how the option is written with its value, as ``--help`` shows it: "--sleep SLEEP"."""
    formatter = parser._get_formatter()
    return formatter._format_action_invocation(action)


def option_lines(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[str]:
    """Return the reST for ``actions``: one ``.. option::`` directive each."""
    lines = []
    for action in actions:
        lines += [f".. option:: {invocation(parser, action)}", ""]
        lines += [f"   {escape(action.help or 'No help text.')}", ""]
        fields = []
        if action.choices:
            fields.append(("Choices", ", ".join(f"``{choice}``" for choice in action.choices)))
        if action.nargs == 0:
            fields.append(("Takes a value", "no; giving the option turns it on"))
        elif action.default not in (None, argparse.SUPPRESS) and "default:" not in (action.help or ""):
            fields.append(("Default", f"``{action.default}``"))
        for name, value in fields:
            lines += [f"   :{name}: {value}"]
        lines.append("")
    return lines


class CommandOptionsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            parser, common, app = command_parsers(name)
        except KeyError:
            logger.warning("no management command named %r", name, location=self.get_location())
            return []

        # The page is rebuilt when the command's module changes.
        self.env.note_dependency(command_file(name))
        lines = [f".. program:: {name}", ""]
        lines += option_lines(parser, own_actions(parser, common))
        shared = [invocation(common, action) for action in common._actions if action.option_strings]
        lines += [
            f"Every Django command also accepts the common options: "
            + ", ".join(f"``{text}``" for text in shared if not text.startswith("-h"))
            + ".",
            "",
            f"The complete output of ``python manage.py {name} --help``:",
            "",
            ".. code-block:: text",
            "",
        ]
        with help_width():
            help_text = parser.format_help()
        lines += [f"   {line}".rstrip() for line in help_text.splitlines()]

        content = StringList()
        source = f"<{name} options from {app}>"
        for number, line in enumerate(lines):
            content.append(line, source, number)
        container = nodes.container(classes=["command-options"])
        self.state.nested_parse(content, 0, container)
        return container.children


def setup(app: Sphinx) -> dict:
    app.add_directive("django-command-options", CommandOptionsDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
