from django.db import migrations

from clinicdesk.roles import sync_role_permissions


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("queues", "0002_taskevent_append_only"),
        ("auditlog", "__latest__"),
        ("auth", "__latest__"),
        ("contenttypes", "__latest__"),
    ]

    operations = [migrations.RunPython(sync_role_permissions, migrations.RunPython.noop)]
