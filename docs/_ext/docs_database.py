"""A throw-away test database for the examples that the doctest builder runs.

The first call of :func:`use_test_database` creates Django's test database
for the current settings (spec.settings: an SQLite file in the temporary
folder) and runs the migrations. Later calls empty the task table. The
database is destroyed when the Python process that built the docs exits.
"""

import atexit

_created: list[str] = []


def use_test_database() -> None:
    """Make the default database an empty, migrated test database."""
    from django.db import connection

    if not _created:
        old_name = connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
        _created.append(old_name)
        atexit.register(_destroy)

    from background_task.models import Task

    Task.objects.all().delete()


def _destroy() -> None:
    from django.db import connection

    connection.creation.destroy_test_db(_created[0], verbosity=0)
