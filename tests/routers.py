"""The database router of ``tests.settings_multidb``.

It is the router that docs/howto/transactions.rst recommends for a project
whose tasks belong with the data of a second database: every query on
``background_task``'s Task goes to that alias, and only that alias gets the
table.
"""

from django.db.models import Model


class TaskRouter:
    """A router that sends reads, writes and migrations of the ``background_task`` app to one alias.

    Other apps are left to the next router or to ``default``, so both aliases
    get their tables.
    """

    app_label = "background_task"
    alias = "billing"

    def db_for_read(self, model: type[Model], **hints: object) -> str | None:
        return self.alias if model._meta.app_label == self.app_label else None

    def db_for_write(self, model: type[Model], **hints: object) -> str | None:
        return self.alias if model._meta.app_label == self.app_label else None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: object) -> bool | None:
        if app_label == self.app_label:
            return db == self.alias
        return None
