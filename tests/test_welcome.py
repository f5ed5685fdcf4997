"""Testing code that queues tasks, as docs/howto/testing.rst shows it.

The docs include these functions verbatim, so each must stay short and read
like a test in a user's project.
"""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import override_settings
from freezegun import freeze_time

import background_task
from background_task.models import Task
from tests.welcome import send_welcome_mail, sign_up

pytestmark = pytest.mark.django_db


def test_sign_up_queues_mail():
    sign_up("ada@example.com")

    task = Task.objects.get(task_name=send_welcome_mail.name)
    assert json.loads(task.task_params) == [["ada@example.com"], {}]
    assert mail.outbox == []


def test_mail_sent_when_due():
    with freeze_time("2030-01-01 09:00:00") as clock:
        sign_up("ada@example.com")
        assert background_task.run_due_tasks() == 0

        clock.tick(timedelta(seconds=60))
        assert background_task.run_due_tasks() == 1

    assert [message.to for message in mail.outbox] == [["ada@example.com"]]
    assert not Task.objects.exists()


@override_settings(MAX_ATTEMPTS=1)
def test_bad_address_fails_task():
    with freeze_time("2030-01-01 09:00:00") as clock:
        sign_up("not an address")
        clock.tick(timedelta(seconds=60))
        background_task.run_due_tasks()

    task = Task.objects.failed().get()
    assert task.attempts == 1
    assert "ValueError: Invalid e-mail address 'not an address'" in task.last_error


def test_mail_text_without_queue():
    send_welcome_mail.now("ada@example.com")

    assert mail.outbox[0].subject == "Welcome"
    assert not Task.objects.exists()
