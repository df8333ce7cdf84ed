"""Department membership changes wherever it is edited (the staff page, the user page's groups,
a script): when someone leaves a department group, what they held in its queues goes back to
the team at once (`services.staff_hand_back_unworkable`), so the change takes effect on their
next request and nobody is left holding work they may no longer open."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed

from accounts import services as accounts_services
from routing import services

LEAVING_ACTOR = "system:membership"


def _actor():
    """The manager who made the change, when the admin names them; else the system."""
    return accounts_services.membership_actor.get() or LEAVING_ACTOR


def _department_groups(pks) -> bool:
    return Group.objects.filter(pk__in=pks, department__isnull=False).exists()


def on_groups_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    if action == "pre_clear":
        # The cleared set is gone by post_clear: note whether it held a department group.
        if reverse:
            instance._clinicdesk_cleared_users = list(
                instance.user_set.values_list("pk", flat=True)
            )
        else:
            instance._clinicdesk_cleared_department = instance.groups.filter(
                department__isnull=False
            ).exists()
        return
    if action == "post_remove":
        if reverse:  # group.user_set.remove(users)
            if not hasattr(instance, "department"):
                return
            user_ids = sorted(pk_set or ())
        else:  # user.groups.remove(groups)
            if not _department_groups(pk_set or ()):
                return
            user_ids = [instance.pk]
    elif action == "post_clear":
        if reverse:
            user_ids = getattr(instance, "_clinicdesk_cleared_users", [])
            if not hasattr(instance, "department"):
                return
        else:
            if not getattr(instance, "_clinicdesk_cleared_department", False):
                return
            user_ids = [instance.pk]
    else:
        return
    actor = _actor()
    for user_id in user_ids:
        services.staff_hand_back_unworkable(user_id=user_id, actor=actor)


def connect() -> None:
    m2m_changed.connect(
        on_groups_changed,
        sender=get_user_model().groups.through,
        dispatch_uid="routing.hand_back_on_leaving",
    )
