from django.apps import AppConfig


class SpecConfig(AppConfig):
    name = "spec"
    label = "spec"
    verbose_name = "background_task specification"
