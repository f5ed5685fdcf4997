"""Task arguments.

A task's arguments have to survive a trip through the database, possibly to a
worker on another machine that runs a later version of the code. They are
therefore stored as strict JSON, and ``task_params`` contains the text
``[args, kwargs]``. Any JSON parser can read it, in any language, and an
administrator can read it in the database or the Django admin.

A task receives exactly what a JSON round trip of its arguments gives. None,
booleans, integers of any size, finite floats, strings, lists and dicts with
string keys arrive unchanged and with the same types. Two conversions follow
from JSON itself: a tuple arrives as a list, and a dict key that is an int,
float, bool or None arrives as the string JSON spells it (``1`` becomes
``"1"``, ``True`` becomes ``"true"``). The task gets what
``json.loads(json.dumps(value))`` returns, nothing more surprising.

Strict JSON has no spelling for NaN or the infinities. Python's ``json``
module writes them as ``NaN`` and ``Infinity`` by default, which many other
parsers reject. The queue refuses them instead, wherever they occur in the
arguments, so ``task_params`` is always valid JSON.

Anything else, such as sets, model instances, bytes, datetimes or decimals,
is rejected when the task is called, not when the worker runs it. The
``TypeError`` names the argument, by position or keyword, and its type, and
nothing is stored. Pass an id, a string or a number instead: a model's
primary key instead of the instance, ``isoformat()`` text instead of a
datetime.
"""

import json
import math
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from spec import adapter
from spec import tasks as spec_tasks
from spec.conftest import fresh_queue

CHAPTER = 2

#: JSON scalars as Python writes them: NaN and the infinities are not JSON.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)

#: Any JSON value: scalars, lists, and dicts with string keys.
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

#: Keyword names that a task with ``**kwargs`` accepts, except ``schedule``, which belongs to the call.
keyword_names = st.text().filter(lambda name: name != "schedule")

#: Values that JSON can encode only by changing them: tuples and non-string dict keys.
non_string_keys = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
convertible_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(non_string_keys, inner, max_size=4)
    ),
    max_leaves=12,
)

NOT_NUMBERS = [math.nan, math.inf, -math.inf]


def typed(value: object) -> object:
    """Return ``value`` with each scalar paired with its type, so ``1``, ``1.0`` and ``True`` compare unequal."""
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    return (type(value).__name__, value)


def received() -> tuple[list, dict]:
    """Return the positional and keyword arguments of the only recorded run."""
    assert len(spec_tasks.calls) == 1
    call = spec_tasks.calls[0]
    return list(call.args), call.kwargs


@pytest.mark.rule(1)
@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(keyword_names, json_values, max_size=4),
)
@example(args=[None, True, 0, -0.0, "", [], {}], kwargs={"big": 10**40, "tiny": 5e-324})
@example(args=["\x00", "naïve ☃ \U0001f600"], kwargs={"nested": {"a": [1, [2.5, {"b": None}]]}})
def test_json_values_arrive_unchanged(args, kwargs):
    """Positional and keyword arguments made of JSON values arrive at the task unchanged, with the same types.

    JSON values are None, booleans, integers, finite floats, strings, lists,
    and dicts with string keys.
    """
    fresh_queue()

    spec_tasks.record(*args, **kwargs)
    adapter.run_due()
    got_args, got_kwargs = received()

    assert typed(got_args) == typed(args)
    assert typed(got_kwargs) == typed(kwargs)


@pytest.mark.rule(2)
@given(
    args=st.lists(convertible_values, max_size=3),
    kwargs=st.dictionaries(keyword_names, convertible_values, max_size=3),
)
@example(args=[(1, (2, 3))], kwargs={"keys": {1: "int", 2.5: "float", True: "bool", None: "none"}})
@example(args=[{1: "int key", "1": "string key"}], kwargs={})
def test_task_gets_json_round_trip(args, kwargs):
    """A task receives its arguments as a JSON round trip gives them, equal to ``json.loads(json.dumps(value))``: tuples arrive as lists and non-string dict keys as strings.

    For example ``(1, (2, 3))`` arrives as ``[1, [2, 3]]``, and the dict
    ``{1: "a", 2.5: "b", True: "c", None: "d"}`` arrives as
    ``{"1": "a", "2.5": "b", "true": "c", "null": "d"}``. When two keys
    spell the same string, as ``1`` and ``"1"`` do, the later one wins.
    """
    fresh_queue()

    spec_tasks.record(*args, **kwargs)
    adapter.run_due()
    got_args, got_kwargs = received()

    assert typed(got_args) == typed(json.loads(json.dumps(args)))
    assert typed(got_kwargs) == typed(json.loads(json.dumps(kwargs)))


def hide(value: object, path: list[int]) -> object:
    """Nest ``value`` inside JSON containers, one per entry of ``path``, each choosing where it sits."""
    for step in path:
        if step == 0:
            value = [1, value]
        elif step == 1:
            value = {"inner": value}
        else:
            value = [{"a": [value]}]
    return value


@pytest.mark.rule(3)
@given(
    bad=st.sampled_from(NOT_NUMBERS),
    path=st.lists(st.integers(0, 2), max_size=3),
    as_key=st.booleans(),
    position=st.integers(0, 2),
    by_keyword=st.booleans(),
)
@example(bad=math.nan, path=[], as_key=False, position=0, by_keyword=False)
@example(bad=math.inf, path=[], as_key=False, position=0, by_keyword=True)
@example(bad=-math.inf, path=[], as_key=True, position=1, by_keyword=False)
def test_nan_and_infinity_rejected(bad, path, as_key, position, by_keyword):
    """NaN, Infinity and -Infinity anywhere in the arguments, as a value or a dict key at any depth, raise TypeError at the call, and nothing is stored.

    Strict JSON cannot spell them, and ``task_params`` stays strict JSON.
    """
    fresh_queue()
    hidden = hide({bad: "key"} if as_key else bad, path)
    args = ["before"] * position + [hidden]
    label = f"positional argument {position}"
    kwargs = {}
    if by_keyword:
        args, kwargs = ["before"], {"when": hidden}
        label = "keyword argument 'when'"

    with pytest.raises(TypeError) as raised:
        spec_tasks.record(*args, **kwargs)

    assert label in str(raised.value)
    assert adapter.queued_tasks() == []


class Invoice:
    """An object that is not a JSON value."""


@pytest.mark.rule(4)
@pytest.mark.parametrize(
    "args, kwargs, label, type_name",
    [
        pytest.param(("ok", {1, 2}), {}, "positional argument 1", "set", id="set"),
        pytest.param((Invoice(),), {}, "positional argument 0", "Invoice", id="object"),
        pytest.param((b"raw",), {}, "positional argument 0", "bytes", id="bytes"),
        pytest.param(
            (),
            {"when": datetime(2026, 1, 1, tzinfo=dt_timezone.utc)},
            "keyword argument 'when'",
            "datetime",
            id="datetime",
        ),
        pytest.param(("ok",), {"amount": Decimal("9.99")}, "keyword argument 'amount'", "Decimal", id="Decimal"),
        pytest.param(([1, {"ids": {3}}],), {}, "positional argument 0", "list", id="set inside a list"),
        pytest.param(({(1, 2): "pair"},), {}, "positional argument 0", "dict", id="tuple as dict key"),
    ],
)
def test_unserialisable_argument_rejected(args, kwargs, label, type_name):
    """An argument that is not a JSON value raises TypeError at the call naming the argument, by position or keyword, and its type, and nothing is stored.

    When the bad value sits inside a list or dict, the message names the
    argument that contains it and that argument's type.
    """
    with pytest.raises(TypeError) as raised:
        spec_tasks.record(*args, **kwargs)

    assert f"{label} of type {type_name}" in str(raised.value)
    assert "'spec.tasks.record'" in str(raised.value)
    assert adapter.queued_tasks() == []


def reject_constant(name: str) -> None:
    raise ValueError(f"task_params contains {name}, which strict JSON does not allow")


@pytest.mark.rule(5)
@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(keyword_names, json_values, max_size=4),
)
@example(args=[1, "a"], kwargs={"flag": True})
def test_params_are_json_pair(args, kwargs):
    """``task_params`` contains the arguments as strict JSON text of the form ``[args, kwargs]``.

    A call ``record(1, "a", flag=True)`` stores ``[[1, "a"], {"flag": true}]``,
    up to whitespace.
    """
    fresh_queue()

    task = spec_tasks.record(*args, **kwargs)
    text = adapter.stored(task).task_params
    decoded = json.loads(text, parse_constant=reject_constant)

    assert typed(decoded) == typed([args, kwargs])

