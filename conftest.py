import pytest

TRANSACTIONAL_FIXTURES = {"transactional_db", "live_server"}


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _roles_after_flush(request):
    """A transactional test starts from a flushed database: content types and permissions are
    recreated with new ids and the role groups (made by a data migration) are gone. Put the
    roles back and forget the cached content type ids, as a fresh migrate would leave them."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(TRANSACTIONAL_FIXTURES & set(request.fixturenames)) or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    from django.apps import apps
    from django.contrib.contenttypes.models import ContentType

    from clinicdesk.roles import sync_role_permissions

    ContentType.objects.clear_cache()
    sync_role_permissions(apps)
    yield
    ContentType.objects.clear_cache()
