"""Registering tasks.

A task is an ordinary function that has been decorated with ``@background``.
The decorator works bare, with empty brackets, or with the options
``schedule`` (the default delay of each call) and ``name`` (the name the task
is stored and looked up under). Calling the decorated function does not run
it. The call checks the arguments, stores one ``Task`` row and returns that
row, and a worker runs the function later. The plain function is never lost:
``task_function.now(...)`` runs it at once in the calling process, and
``task_function.__wrapped__`` is the function itself.

A worker finds a task's function only by the task's name. The default name is
``<module>.<function name>``, so a worker process that imports the same module
finds the same function. For that reason only module-level functions can
become tasks. A function nested in another function or defined in a class body
has no importable name, and a lambda has no name at all, so the decorator
rejects them with ``TypeError``. It also rejects anything that is not a
function, such as a class or a callable object, and coroutine and generator
functions, because a worker that calls them would never run their body. The
keyword ``schedule`` is reserved, because every call accepts ``schedule=...``
to choose when the task runs, so a task function may not have a parameter of
that name.

A name given with ``name=`` must be a non-empty string of at most 190
characters, the size of the ``task_name`` column. Names are process-wide.
Registering a second, different function under a name that is already taken
raises ``TaskNameConflict``, a subclass of Django's ``ImproperlyConfigured``,
at import time. Silently replacing the first function would make every queued
task of that name run the wrong code. Decorating the same function again, as
happens when its module is imported a second time, is harmless and allowed.

Mistakes surface at the call rather than in the worker. Arguments that do not
fit the function's signature raise ``TypeError`` when the task is called, and
nothing is stored, because a row that can never run would only fail
``MAX_ATTEMPTS`` times much later.
"""

import functools
import types

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 1

MODULE = __name__


def note(name: str, *args: object) -> None:
    """Record a run of one of this chapter's functions in ``spec.tasks.calls``."""
    spec_tasks.calls.append(spec_tasks.Call(name, args, {}, timezone.now()))


# Plain module-level functions, decorated inside the tests that need them.


def send_welcome(user_id: int) -> None:
    """Send the welcome mail to ``user_id``."""
    note("send_welcome", user_id)


def send_reminder(user_id: int) -> None:
    note("send_reminder", user_id)


def send_invoice(user_id: int) -> None:
    note("send_invoice", user_id)


def first_of_pair() -> None:
    note("first_of_pair")


def second_of_pair() -> None:
    note("second_of_pair")


def takes_schedule(report_id: int, schedule: str) -> None:
    note("takes_schedule", report_id, schedule)


def long_named() -> None:
    note("long_named")


async def fetch_feed(url: str) -> None:
    note("fetch_feed", url)


def stream_rows(table: str):
    note("stream_rows", table)
    yield table


class Mailer:
    def send(self, user_id: int) -> None:
        note("Mailer.send", user_id)


class CallableMailer:
    def __call__(self, user_id: int) -> None:
        note("CallableMailer", user_id)


module_level_lambda = lambda user_id: note("lambda", user_id)  # noqa: E731


# Task functions registered when this module is imported.


@adapter.background(name="spec.registering.add")
def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


@adapter.background(name="spec.registering.greet")
def greet(name: str, *, greeting: str = "Hello") -> None:
    """Record the greeting for ``name``."""
    note("greet", name, greeting)


@pytest.mark.rule(1)
@pytest.mark.parametrize(
    "decorate, plain",
    [
        pytest.param(lambda f: adapter.background(f), send_welcome, id="bare"),
        pytest.param(lambda f: adapter.background()(f), send_reminder, id="empty brackets"),
        pytest.param(
            lambda f: adapter.background(schedule=0, name="spec.registering.invoice")(f),
            send_invoice,
            id="with options",
        ),
    ],
)
def test_three_decorator_forms(decorate, plain):
    """``@background``, ``@background()`` and ``@background(schedule=..., name=...)`` each turn a module-level function into a task function.

    A task function stores a task when called, and a worker later runs the
    original function with the same arguments.
    """
    task_function = decorate(plain)

    task = task_function(7)
    stored_before_run = adapter.queued_tasks()
    adapter.run_due()

    assert stored_before_run == [task]
    assert [(call.name, call.args) for call in spec_tasks.calls] == [(plain.__name__, (7,))]


@pytest.mark.rule(2)
def test_default_and_given_names():
    """A task's name is ``<module>.<function name>`` unless ``name=`` gives another, and Task.task_name stores it."""
    default_named = adapter.background(send_welcome)
    given_named = adapter.background(name="spec.registering.reminder")(send_reminder)

    default_task = default_named(1)
    given_task = given_named(2)

    assert default_task.task_name == "spec.test_01_registering.send_welcome"
    assert spec_tasks.record().task_name == "spec.tasks.record"
    assert given_task.task_name == "spec.registering.reminder"
    assert adapter.stored(given_task).task_name == "spec.registering.reminder"


@pytest.mark.rule(3)
def test_call_stores_one_task():
    """Calling a task function stores one Task row and returns that stored row, and the function itself does not run."""
    task = greet("Ada", greeting="Hi")

    assert isinstance(task, adapter.Task)
    assert task.pk is not None
    assert task.task_name == "spec.registering.greet"
    assert adapter.queued_tasks() == [task]
    assert adapter.stored(task).task_params == task.task_params
    assert spec_tasks.calls == []


@pytest.mark.rule(4)
def test_plain_function_stays_callable():
    """``task_function.now(*args, **kwargs)`` runs the function at once and returns its result, storing nothing, and ``task_function.__wrapped__`` is the plain function.

    This is the way to call a task's code synchronously, for example in a
    unit test of the task itself or from a shell.
    """
    task_function = adapter.background(send_welcome)

    result = add.now(2, b=3)
    task_function.now(5)

    assert result == 5
    assert task_function.__wrapped__ is send_welcome
    assert [(call.name, call.args) for call in spec_tasks.calls] == [("send_welcome", (5,))]
    assert adapter.queued_tasks() == []


@pytest.mark.rule(5)
def test_keeps_function_metadata():
    """A task function keeps the plain function's ``__name__``, ``__qualname__``, ``__module__`` and ``__doc__``.

    Documentation tools, debuggers and log lines that show a function
    therefore show the task's own function, not a wrapper.
    """
    task_function = adapter.background(name="spec.registering.welcome_metadata")(send_welcome)

    assert task_function.__name__ == "send_welcome"
    assert task_function.__qualname__ == "send_welcome"
    assert task_function.__module__ == MODULE
    assert task_function.__doc__ == "Send the welcome mail to ``user_id``."


def nested_function():
    def notify(user_id: int) -> None:
        note("notify", user_id)

    return notify


@pytest.mark.rule(6)
@pytest.mark.parametrize(
    "func, shown_as",
    [
        pytest.param(nested_function(), "nested_function.<locals>.notify", id="nested function"),
        pytest.param(Mailer.send, "Mailer.send", id="function in a class body"),
        pytest.param(lambda user_id: None, "<lambda>", id="lambda in a test"),
        pytest.param(module_level_lambda, "<lambda>", id="lambda at module level"),
    ],
)
def test_rejects_non_module_functions(func, shown_as):
    """Decorating a nested function, a function defined in a class body, or a lambda raises TypeError at decoration time, saying a task must be a module-level function.

    A worker finds a task's function by importing ``<module>.<function name>``,
    which none of these has.
    """
    with pytest.raises(TypeError) as raised:
        adapter.background(func)

    assert "must be a module-level function" in str(raised.value)
    assert shown_as in str(raised.value)


@pytest.mark.rule(7)
@pytest.mark.parametrize(
    "obj, type_name",
    [
        pytest.param(Mailer, "type", id="class"),
        pytest.param(CallableMailer(), "CallableMailer", id="callable instance"),
        pytest.param(functools.partial(send_welcome, 1), "partial", id="functools.partial"),
        pytest.param(print, "builtin_function_or_method", id="built-in function"),
    ],
)
def test_rejects_non_functions(obj, type_name):
    """Decorating anything that is not a plain function, such as a class, a callable object, a partial or a built-in, raises TypeError naming its type."""
    with pytest.raises(TypeError) as raised:
        adapter.background(name="spec.registering.not_a_function")(obj)

    assert "plain functions" in str(raised.value)
    assert type_name in str(raised.value)


@pytest.mark.rule(8)
@pytest.mark.parametrize(
    "func",
    [
        pytest.param(fetch_feed, id="async def"),
        pytest.param(stream_rows, id="generator function"),
    ],
)
def test_rejects_coroutine_and_generator(func):
    """Decorating a coroutine function (``async def``) or a generator function raises TypeError at decoration time.

    The worker calls a task and waits for it to return. Calling either kind of
    function only creates a coroutine or generator object, so the body would
    never run, yet the task would be recorded as having succeeded.
    """
    assert isinstance(func, types.FunctionType)

    with pytest.raises(TypeError) as raised:
        adapter.background(name=f"spec.registering.{func.__name__}")(func)

    assert func.__name__ in str(raised.value)


@pytest.mark.rule(9)
def test_rejects_schedule_parameter():
    """A function with a parameter named ``schedule`` is rejected at decoration time with a TypeError naming the parameter.

    Every call of a task function takes ``schedule=`` to choose when the task
    runs, so the function could never receive an argument of that name.
    """
    with pytest.raises(TypeError) as raised:
        adapter.background(takes_schedule)

    assert "'schedule'" in str(raised.value)
    assert "takes_schedule" in str(raised.value)


@pytest.mark.rule(10)
def test_name_conflict_raises():
    """Registering a different function under a task name that is already taken raises TaskNameConflict, an ImproperlyConfigured, naming the task name and both functions."""
    adapter.background(name="spec.registering.taken")(first_of_pair)

    with pytest.raises(ImproperlyConfigured) as raised:
        adapter.background(name="spec.registering.taken")(second_of_pair)

    assert type(raised.value).__name__ == "TaskNameConflict"
    assert "'spec.registering.taken'" in str(raised.value)
    assert f"{MODULE}.first_of_pair" in str(raised.value)
    assert f"{MODULE}.second_of_pair" in str(raised.value)


@pytest.mark.rule(11)
def test_same_function_registers_again():
    """Decorating the same function again under the same name is allowed, as happens when its module is imported twice, and the name keeps running that function."""
    adapter.background(name="spec.registering.again")(send_reminder)
    again = adapter.background(name="spec.registering.again")(send_reminder)

    again(3)
    adapter.run_due()

    assert [(call.name, call.args) for call in spec_tasks.calls] == [("send_reminder", (3,))]


@pytest.mark.rule(12)
@pytest.mark.parametrize(
    "args, kwargs, reason",
    [
        pytest.param((), {}, "missing a required argument: 'a'", id="missing argument"),
        pytest.param((1, 2, 3), {}, "too many positional arguments", id="too many"),
        pytest.param((1, 2), {"c": 3}, "unexpected keyword argument 'c'", id="unknown keyword"),
        pytest.param((1, 2), {"a": 3}, "multiple values for argument 'a'", id="given twice"),
    ],
)
def test_wrong_arguments_rejected(args, kwargs, reason):
    """Calling a task function with arguments that do not fit its signature raises TypeError at the call, naming the task, and stores nothing.

    The mistake shows where it was made, instead of as a task that fails in
    the worker on every attempt.
    """
    with pytest.raises(TypeError) as raised:
        add(*args, **kwargs)

    assert "'spec.registering.add'" in str(raised.value)
    assert reason in str(raised.value)
    assert adapter.queued_tasks() == []


@pytest.mark.rule(13)
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(42, id="int"),
        pytest.param(b"spec.registering.bytes", id="bytes"),
    ],
)
def test_name_must_be_nonempty_string(name):
    """``name=`` must be a non-empty string, and anything else raises TypeError at decoration time, showing the value."""
    with pytest.raises(TypeError) as raised:
        adapter.background(name=name)(send_invoice)

    assert "name must be a non-empty string" in str(raised.value)
    assert repr(name) in str(raised.value)


@pytest.mark.rule(14)
def test_name_fits_task_name_column():
    """A name longer than 190 characters, the size of the task_name column, raises TypeError at decoration time, while a name of exactly 190 characters is accepted.

    Without this check the call would fail on PostgreSQL, which enforces the
    column size, and succeed on SQLite, which does not, so the same code would
    behave differently per database.
    """
    longest = "spec.registering." + "n" * (190 - len("spec.registering."))
    too_long = longest + "n"

    task = adapter.background(name=longest)(long_named)()
    with pytest.raises(TypeError) as raised:
        adapter.background(name=too_long)(long_named)

    assert adapter.stored(task).task_name == longest
    assert "190" in str(raised.value)
