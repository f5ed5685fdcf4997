"""A state diagram drawn as inline SVG by Sphinx itself, with each edge linked to a rule.

No external renderer is needed, so the build works offline and on machines
without Graphviz. The directive's content places the states on a grid and
lists the edges::

    .. state-diagram:: The life of a task

       state queued "Queued" 0 1
       state start "" 0 0 initial
       edge start queued 1.3 "stored by a call"
       edge queued locked 7.1 "due, claimed" at=0.5,0.8

``state NAME "LABEL" COLUMN ROW [initial]`` places a state; an ``initial``
state is drawn as a dot. ``edge FROM TO RULE "LABEL" [at=X,Y]`` draws an arrow
whose label links to the rule; ``at`` moves the label's centre to that grid
position (by default it sits halfway, beside the line for one of two edges
drawn side by side). Two edges between the same states in
opposite directions are drawn side by side.

HTML builders get the SVG; every builder gets a table of the transitions
with a link to each rule, which is also what makes a dangling rule number a
build warning.
"""

from __future__ import annotations

import html
import math
import shlex
from dataclasses import dataclass

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

CELL_WIDTH = 250
CELL_HEIGHT = 130
BOX_WIDTH = 150
BOX_HEIGHT = 42
MARGIN = 20
#: Average width of one character of the 12 px label font, for sizing the label backgrounds.
CHAR_WIDTH = 6.1
PAIR_OFFSET = 16


@dataclass
class State:
    name: str
    label: str
    column: float
    row: float
    initial: bool = False

    @property
    def centre(self) -> tuple[float, float]:
        return MARGIN + (self.column + 0.5) * CELL_WIDTH, MARGIN + (self.row + 0.5) * CELL_HEIGHT

    @property
    def half_size(self) -> tuple[float, float]:
        return (7.0, 7.0) if self.initial else (BOX_WIDTH / 2, BOX_HEIGHT / 2)


@dataclass
class Edge:
    source: str
    target: str
    rule: str
    label: str
    at: tuple[float, float] | None = None


class state_diagram(nodes.General, nodes.Element):
    """Holds the parsed diagram until the links can be resolved per page."""


class DiagramError(ValueError):
    pass


def parse(lines: list[str]) -> tuple[dict[str, State], list[Edge]]:
    """Parse the directive's content; raise DiagramError naming the bad line."""
    states: dict[str, State] = {}
    edges: list[Edge] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        try:
            if words[0] == "state" and len(words) in (5, 6):
                initial = len(words) == 6
                if initial and words[5] != "initial":
                    raise DiagramError(f"line {number}: the sixth word may only be 'initial'")
                states[words[1]] = State(words[1], words[2], float(words[3]), float(words[4]), initial)
            elif words[0] == "edge" and len(words) in (5, 6):
                at = None
                if len(words) == 6:
                    if not words[5].startswith("at="):
                        raise DiagramError(f"line {number}: the sixth word must be at=X,Y")
                    x, y = words[5][3:].split(",")
                    at = (float(x), float(y))
                edges.append(Edge(words[1], words[2], words[3], words[4], at))
            else:
                raise DiagramError(
                    f"line {number}: expected 'state NAME \"LABEL\" COLUMN ROW [initial]' or "
                    f"'edge FROM TO RULE \"LABEL\" [at=X,Y]', got {line.strip()!r}"
                )
        except ValueError as error:
            if isinstance(error, DiagramError):
                raise
            raise DiagramError(f"line {number}: {error}") from None
    for edge in edges:
        for name in (edge.source, edge.target):
            if name not in states:
                raise DiagramError(f"edge {edge.source} -> {edge.target} names the unknown state {name!r}")
    return states, edges


def border_point(state: State, towards: tuple[float, float], offset: tuple[float, float]) -> tuple[float, float]:
    """Return where the line from ``state``'s centre (moved by ``offset``) towards a point leaves its box."""
    cx, cy = state.centre
    cx, cy = cx + offset[0], cy + offset[1]
    dx, dy = towards[0] - cx, towards[1] - cy
    half_w, half_h = state.half_size
    if state.initial:
        length = math.hypot(dx, dy) or 1
        return cx + dx / length * half_w, cy + dy / length * half_h
    scale = min(half_w / abs(dx) if dx else math.inf, half_h / abs(dy) if dy else math.inf)
    return cx + dx * scale, cy + dy * scale


def render_svg(title: str, states: dict[str, State], edges: list[Edge], links: dict[str, str]) -> str:
    """Return the diagram as an SVG element; ``links`` maps a rule id to its URL."""
    columns = max(state.column for state in states.values()) + 1
    rows = max(state.row for state in states.values()) + 1
    width, height = 2 * MARGIN + columns * CELL_WIDTH, 2 * MARGIN + rows * CELL_HEIGHT
    pairs = {(edge.source, edge.target) for edge in edges}
    out = [
        f'<svg class="state-diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        '<defs><marker id="state-diagram-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrow-head"/></marker></defs>',
    ]

    labels = []
    for edge in edges:
        source, target = states[edge.source], states[edge.target]
        (sx, sy), (tx, ty) = source.centre, target.centre
        offset = (0.0, 0.0)
        if (edge.target, edge.source) in pairs:
            length = math.hypot(tx - sx, ty - sy) or 1
            offset = (-(ty - sy) / length * PAIR_OFFSET, (tx - sx) / length * PAIR_OFFSET)
        start = border_point(source, (tx + offset[0], ty + offset[1]), offset)
        end = border_point(target, (sx + offset[0], sy + offset[1]), offset)
        url = links.get(edge.rule)
        out.append(
            f'<line class="edge" x1="{start[0]:.1f}" y1="{start[1]:.1f}" x2="{end[0]:.1f}" y2="{end[1]:.1f}" '
            'marker-end="url(#state-diagram-arrow)"/>'
        )
        if edge.at is not None:
            lx, ly = MARGIN + (edge.at[0] + 0.5) * CELL_WIDTH, MARGIN + (edge.at[1] + 0.5) * CELL_HEIGHT
        elif offset != (0.0, 0.0):
            # Two edges side by side: each label sits beside its own edge, on the outer side.
            push = (PAIR_OFFSET + 12) / PAIR_OFFSET
            lx, ly = (start[0] + end[0]) / 2 + offset[0] * push, (start[1] + end[1]) / 2 + offset[1] * push
        else:
            lx, ly = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        text = f"{edge.label} ({edge.rule})"
        label_width = len(text) * CHAR_WIDTH + 8
        label = (
            f'<rect class="edge-label-back" x="{lx - label_width / 2:.1f}" y="{ly - 10:.1f}" '
            f'width="{label_width:.1f}" height="19" rx="4"/>'
            f'<text class="edge-label" x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="middle">{html.escape(text)}</text>'
        )
        if url:
            label = f'<a href="{html.escape(url)}"><title>rule {edge.rule}</title>{label}</a>'
        labels.append(label)

    for state in states.values():
        cx, cy = state.centre
        if state.initial:
            out.append(f'<circle class="initial" cx="{cx:.1f}" cy="{cy:.1f}" r="7"/>')
            continue
        out.append(
            f'<rect class="state" x="{cx - BOX_WIDTH / 2:.1f}" y="{cy - BOX_HEIGHT / 2:.1f}" '
            f'width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="10"/>'
            f'<text class="state-label" x="{cx:.1f}" y="{cy + 5:.1f}" text-anchor="middle">{html.escape(state.label)}</text>'
        )
    # Labels last, so they sit on top of every line.
    out.extend(labels)
    out.append("</svg>")
    return "\n".join(out)


class StateDiagramDirective(SphinxDirective):
    required_arguments = 1
    final_argument_whitespace = True
    has_content = True

    def run(self) -> list[nodes.Node]:
        title = self.arguments[0]
        try:
            states, edges = parse(list(self.content))
        except DiagramError as error:
            logger.warning("state-diagram: %s", error, location=self.get_location())
            return []

        # Imported here so that this module also works without spec_docs.
        from spec_docs import rule_reference

        figure = nodes.container(classes=["state-diagram-figure"])
        diagram = state_diagram(title=title, states=states, edges=edges)
        figure += diagram

        rows = []
        for edge in edges:
            row = nodes.row()
            for text in (states[edge.source].label or "(new)", states[edge.target].label, edge.label):
                entry = nodes.entry()
                entry += nodes.paragraph(text, text)
                row += entry
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += rule_reference(edge.rule)
            entry += paragraph
            row += entry
            rows.append(row)
        transitions = nodes.table(classes=["state-diagram-table"])
        group = nodes.tgroup(cols=4)
        transitions += group
        for width in (2, 2, 4, 1):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        header = nodes.row()
        for text in ("From", "To", "When", "Proved by"):
            entry = nodes.entry()
            entry += nodes.paragraph(text, text)
            header += entry
        head += header
        group += head
        body = nodes.tbody()
        body.extend(rows)
        group += body
        caption = nodes.paragraph(title, title, classes=["state-diagram-caption"])
        return [figure, caption, transitions]


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Replace each diagram by its SVG (HTML) or by nothing (other builders, which keep the table)."""
    labels = app.env.get_domain("std").labels
    for node in list(doctree.findall(state_diagram)):
        if app.builder.format != "html":
            node.parent.remove(node)
            continue
        links = {}
        for edge in node["edges"]:
            target = labels.get("rule-" + edge.rule.replace(".", "-"))
            if target is None:
                continue  # the transitions table's reference already warns about it
            target_doc, anchor, _ = target
            links[edge.rule] = app.builder.get_relative_uri(docname, target_doc) + "#" + anchor
        svg = render_svg(node["title"], node["states"], node["edges"], links)
        node.replace_self(nodes.raw("", svg, format="html"))


def setup(app: Sphinx) -> dict:
    app.add_node(state_diagram)
    app.add_directive("state-diagram", StateDiagramDirective)
    app.connect("doctree-resolved", on_doctree_resolved)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
