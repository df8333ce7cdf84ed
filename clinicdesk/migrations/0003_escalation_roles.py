from django.db import migrations

from clinicdesk.roles import sync_role_permissions


class Migration(migrations.Migration):
    dependencies = [
        ("clinicdesk", "0002_routing_roles"),
        ("escalation", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_role_permissions, migrations.RunPython.noop)]
