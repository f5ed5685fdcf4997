from django.apps import AppConfig


class BackgroundTaskConfig(AppConfig):
    name = "background_task"
    label = "background_task"
    verbose_name = "Background tasks"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing the module registers the system checks.
        from background_task import checks  # noqa: F401
