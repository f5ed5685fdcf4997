"""Importing the ``tasks`` module of every installed app, so its tasks register."""

import logging
from importlib import import_module

from django.apps import apps
from django.utils.module_loading import module_has_submodule

logger = logging.getLogger(__name__)


def autodiscover_tasks() -> list[str]:
    """Import ``<app>.tasks`` for each installed app that has one; return the modules imported.

    An app without a tasks module is skipped. An ImportError raised inside an
    existing tasks module is raised again with that module's name, because its
    tasks would be missing.
    """
    imported = []
    for app_config in apps.get_app_configs():
        if not module_has_submodule(app_config.module, "tasks"):
            continue
        module_name = f"{app_config.name}.tasks"
        try:
            import_module(module_name)
        except ImportError as error:
            raise ImportError(f"Importing task module {module_name} failed: {error}", name=module_name) from error
        imported.append(module_name)

    logger.debug("Imported task modules: %s", ", ".join(imported) or "none")
    return imported
