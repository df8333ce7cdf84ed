pytest_plugins = ["clinicdesk.tests.browser"]

import logging  # noqa: E402

import pytest  # noqa: E402

from clinicdesk.tests.canary_marker import PATIENT_CANARY  # noqa: E402

TRANSACTIONAL_FIXTURES = {"transactional_db", "live_server"}


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    # Tests run with DEBUG off, where the demo refuses its well-known default password.
    settings.DEMO_PASSWORD = "clinicdesk-test-demo"
    # Hashing is not what the tests test: the fast hasher saves seconds on every sign-in.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _roles(request):
    """The role groups come from a data migration, but a transactional test ends by flushing
    the database, which also recreates content types and permissions with new ids. Every test
    that touches the database starts with the roles in place and no stale content type ids."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(TRANSACTIONAL_FIXTURES & set(request.fixturenames)) or bool(
        marker and marker.kwargs.get("transaction")
    )
    if transactional:
        request.getfixturevalue("transactional_db")
    elif marker or "db" in request.fixturenames:
        request.getfixturevalue("db")
    else:
        yield
        return
    from django.apps import apps
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType

    from clinicdesk.roles import ROLES, sync_role_permissions

    ContentType.objects.clear_cache()
    if transactional or Group.objects.filter(name__in=ROLES).count() < len(ROLES):
        sync_role_permissions(apps)
    yield
    ContentType.objects.clear_cache()


class _Canary:
    """Notes every log record, of any test, whose text shows the patient canary.

    It sits in the log record factory rather than on a handler: logging configuration (which
    Django or a test may apply again) replaces handlers, never the factory. A record is made
    only at a level its logger is enabled for, so this checks what production would log.
    """

    def __init__(self):
        self.leaks: list[str] = []
        self.test = ""
        self.make = None

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is not the canary's business
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        if PATIENT_CANARY in text:
            self.leaks.append(f"{self.test}: {record.name} {record.levelname}: {text[:200]}")
        return record


_canary = _Canary()


@pytest.fixture(scope="session", autouse=True)
def _patient_data_canary():
    """Patient data never reaches the logs, in any test: the factories mark patient fields, and
    the run fails at its end naming each log line that showed one."""
    _canary.make = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_canary)
    yield
    logging.setLogRecordFactory(_canary.make)
    if _canary.leaks:
        pytest.fail(
            "Patient data reached the logs:\n" + "\n".join(_canary.leaks[:20]), pytrace=False
        )


@pytest.fixture(autouse=True)
def _canary_test_name(request):
    _canary.test = request.node.nodeid
