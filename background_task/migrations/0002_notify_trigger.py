"""On PostgreSQL, notify idle workers when tasks are stored.

A statement-level trigger sends one notification per INSERT statement on the
``background_task`` channel. PostgreSQL delivers it when the storing
transaction commits, so a worker never hears of a task it cannot see yet,
and a rolled-back enqueue sends nothing. Other databases skip this migration.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION background_task_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('background_task', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER background_task_notify
    AFTER INSERT ON background_task
    FOR EACH STATEMENT EXECUTE FUNCTION background_task_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS background_task_notify ON background_task;
DROP FUNCTION IF EXISTS background_task_notify();
"""


def create_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("background_task", "0001_task_queue")]

    operations = [migrations.RunPython(create_trigger, drop_trigger, elidable=False)]
