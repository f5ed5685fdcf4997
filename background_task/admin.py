from django.contrib import admin

from background_task.models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "task_name", "run_at", "attempts", "failed_at", "locked_by", "locked_at"]
    list_filter = [("failed_at", admin.EmptyFieldListFilter), "task_name"]
    search_fields = ["task_name", "last_error"]
    ordering = ["run_at", "id"]
    readonly_fields = ["locked_by", "locked_at"]
