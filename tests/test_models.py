"""The Task table's shape, kept compatible with django-background-tasks 1.2.8 where concepts match."""

import pytest
from django.db import connection

from background_task.models import Task

pytestmark = pytest.mark.django_db

# Columns whose meaning is the same as in django-background-tasks 1.2.8,
# which keeps an upgrade path from its table open.
SHARED_COLUMNS = {
    "task_name", "task_params", "run_at", "attempts", "failed_at", "last_error", "locked_by", "locked_at",
}


def test_table_keeps_original_name():
    assert Task._meta.db_table == "background_task"
    assert Task._meta.app_label == "background_task"


def test_columns_keep_original_names():
    with connection.cursor() as cursor:
        columns = {column.name for column in connection.introspection.get_table_description(cursor, "background_task")}

    assert SHARED_COLUMNS <= columns
    assert columns - SHARED_COLUMNS == {"id"}


def test_claim_index_is_partial_on_run_at():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "background_task")

    index = constraints["background_task_claim_idx"]
    assert index["columns"] == ["run_at", "id"]
    assert index["index"] is True
