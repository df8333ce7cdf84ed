"""Django's `flush`, able to empty the append-only audit tables of a *test* database.

The audit and timeline tables refuse TRUNCATE (clinicdesk migration 0005). A transactional
test ends with `flush`, so on the test database only, the flush runs with
`session_replication_role = replica`, which skips ordinary triggers and needs a superuser
(the embedded server's role is one). Anywhere else `manage.py flush` is Django's own and the
triggers refuse it, as they should.
"""

from __future__ import annotations

from django.core.management.commands import flush
from django.db import connections


def is_test_database(connection) -> bool:
    settings_dict = connection.settings_dict
    return settings_dict["NAME"] == settings_dict.get("TEST", {}).get("NAME")


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        if not is_test_database(connection):
            return super().handle(**options)
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            return super().handle(**options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")
