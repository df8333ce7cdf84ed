"""The four roles are Django groups with model permissions; department groups get object
permissions on their queues (see `accounts.services.department_grant_queue`).

Migrations call `sync_role_permissions` so that a fresh database and an upgraded one end with
the same grants; a later app adds its models here and a migration of its own calls it again.
"""

from __future__ import annotations

AGENT = "Agent"
SUPERVISOR = "Supervisor"
MANAGER = "Manager"
COMPLIANCE = "Compliance"
ROLES = (AGENT, SUPERVISOR, MANAGER, COMPLIANCE)

# Configuration that managers edit in the admin (never delete history-bearing rows).
CONFIG_MODELS = {
    "accounts": ["site", "department", "skill", "staffprofile", "staffskill"],
    "queues": ["tasktype", "queue", "integrationclient"],
    "routing": [
        "ruleset",
        "classificationrule",
        "routingrule",
        "deduppolicy",
        "workflowtemplate",
        "workflowstep",
    ],
    "escalation": ["businesscalendar", "calendarclosure", "slapolicy", "escalationstep"],
}
RECORD_MODELS = {
    "queues": ["task", "taskevent", "inboundmessage", "emergencyaccess"],
    "escalation": ["escalation", "notification"],
    "routing": ["rulesetevent", "replayrun"],
}

ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Agents and supervisors may break the glass: read a task outside their departments.
    AGENT: ["queues.view_tasktype", "queues.add_emergencyaccess"],
    SUPERVISOR: [
        "queues.view_tasktype",
        "queues.add_emergencyaccess",
        "accounts.view_staffprofile",
        "accounts.view_skill",
        "accounts.view_staffskill",
        "escalation.view_escalation",
        "escalation.change_escalation",
    ],
    MANAGER: [
        *(
            f"{app}.{action}_{model}"
            for app, models in CONFIG_MODELS.items()
            for model in models
            for action in ("add", "change", "view")
        ),
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "queues.view_task",
        "queues.change_task",
        "queues.view_taskevent",
        "queues.view_inboundmessage",
        "queues.view_queue",
        "queues.view_emergencyaccess",
        "routing.delete_classificationrule",
        "routing.delete_routingrule",
        "routing.delete_workflowstep",
        "routing.publish_ruleset",
        "routing.view_rulesetevent",
        "routing.view_replayrun",
        "escalation.delete_calendarclosure",
        "escalation.delete_escalationstep",
        "escalation.view_escalation",
        "escalation.change_escalation",
        "escalation.view_notification",
        "auditlog.view_logentry",
    ],
    COMPLIANCE: [
        *(
            f"{app}.view_{model}"
            for group in (CONFIG_MODELS, RECORD_MODELS)
            for app, models in group.items()
            for model in models
        ),
        "auditlog.view_logentry",
    ],
}


DEFAULT_ACTIONS = ("add", "change", "delete", "view")


def sync_role_permissions(apps, schema_editor=None) -> None:
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # Historical app configs (in migrations) have no models module, which would make
        # create_permissions skip them.
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        try:
            create_permissions(app_config, verbosity=0, apps=apps)
        finally:
            app_config.models_module = original

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is None:
                action, model_name = codename.split("_", 1)
                if action not in DEFAULT_ACTIONS or not _model_known(apps, app_label, model_name):
                    # An app (or a custom permission) migrated later than this migration: its
                    # own migration syncs the roles again once it exists.
                    continue
                raise LookupError(f"permission {dotted} does not exist")
            wanted.append(permission)
        group.permissions.add(*wanted)


def _model_known(apps, app_label: str, model_name: str) -> bool:
    try:
        apps.get_model(app_label, model_name)
    except LookupError:
        return False
    return True
