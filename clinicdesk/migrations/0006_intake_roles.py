from django.db import migrations

from clinicdesk.roles import sync_role_permissions


class Migration(migrations.Migration):
    """Managers edit integration clients, dedup policies and workflow templates; compliance
    reads them."""

    dependencies = [
        ("clinicdesk", "0005_audit_tamper_proof"),
        ("queues", "0007_task_indexes_for_api_and_thread_dedup"),
        ("routing", "0002_dedup_policy_workflow_templates"),
    ]

    operations = [migrations.RunPython(sync_role_permissions, migrations.RunPython.noop)]
