"""A sign-up function that queues a welcome mail, the code under test in docs/howto/testing.rst."""

from django.core.mail import send_mail

from background_task import background


@background(schedule=60)
def send_welcome_mail(address: str) -> None:
    """Mail ``address`` a welcome message."""
    if "@" not in address:
        raise ValueError(f"Invalid e-mail address {address!r}: it contains no '@'.")
    send_mail("Welcome", "Thanks for signing up.", "team@example.com", [address])


def sign_up(address: str) -> None:
    """Create the account for ``address`` (left out here) and queue its welcome mail."""
    send_welcome_mail(address)
