from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts.models import Department, Site, StaffProfile

User = get_user_model()

# Who is changing department memberships in this block (a manager in the admin), for the
# timeline of the tasks a leaving member hands back (routing.receivers).
membership_actor: ContextVar = ContextVar("membership_actor", default=None)


@contextlib.contextmanager
def membership_changed_by(user) -> Iterator[None]:
    token = membership_actor.set(user)
    try:
        yield
    finally:
        membership_actor.reset(token)


@transaction.atomic
def department_create(*, site: Site, name: str, code: str, description: str = "") -> Department:
    """A department and the group whose members are its staff."""
    group, _ = Group.objects.get_or_create(name=f"Department: {name} ({site.code})")
    return Department.objects.create(
        site=site, name=name, code=code, group=group, description=description
    )


def departments_of(user) -> list[Department]:
    return list(Department.objects.filter(group__user=user).select_related("site"))


@transaction.atomic
def staff_set_departments(*, profile: StaffProfile, departments) -> None:
    """Department membership is membership of the department's group: one truth, which both
    routing (who may work a queue) and row permissions (who may see it) read."""
    user = profile.user
    wanted = {department.group_id for department in departments}
    current = set(user.groups.filter(department__isnull=False).values_list("id", flat=True))
    if current - wanted:
        user.groups.remove(*(current - wanted))
    if wanted - current:
        user.groups.add(*(wanted - current))


@transaction.atomic
def staff_set_availability(*, profile: StaffProfile, availability: str) -> StaffProfile:
    if availability not in StaffProfile.Availability.values:
        raise ValueError(f"unknown availability {availability!r}")
    profile.availability = availability
    profile.availability_changed_at = timezone.now()
    profile.save(update_fields=["availability", "availability_changed_at"])
    return profile


TAKE_CAPACITY_SQL = """
UPDATE accounts_staffprofile
   SET active_load = active_load + %(units)s,
       last_assigned_at = CASE WHEN %(touch)s THEN %(now)s ELSE last_assigned_at END
 WHERE user_id = %(user_id)s AND active_load + %(units)s <= capacity
RETURNING id
"""


# Pushing work to a person (routing, offering freed capacity) skips a person whose row another
# transaction holds, instead of waiting for it: such a push runs while its transaction may
# already hold other staff rows (a resolve frees its assignee's units and offers queued work
# to whoever is best placed), and two of them waiting on each other's rows would deadlock. The
# push then goes to the next best person, or the task waits for the next freed capacity.
TAKE_CAPACITY_SKIP_LOCKED_SQL = """
UPDATE accounts_staffprofile
   SET active_load = active_load + %(units)s,
       last_assigned_at = CASE WHEN %(touch)s THEN %(now)s ELSE last_assigned_at END
 WHERE user_id = (SELECT user_id FROM accounts_staffprofile
                   WHERE user_id = %(user_id)s AND active_load + %(units)s <= capacity
                   FOR UPDATE SKIP LOCKED)
   AND active_load + %(units)s <= capacity
RETURNING id
"""


def staff_take_capacity(
    *, user_id: int, units: int, touch_last_assigned: bool, skip_locked: bool = False
) -> bool:
    """Take `units` of the person's capacity if they have room: one conditional UPDATE, so
    nobody is ever over capacity whatever the concurrency. False when there is no room (or,
    with `skip_locked`, when another transaction holds the person's row right now)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            TAKE_CAPACITY_SKIP_LOCKED_SQL if skip_locked else TAKE_CAPACITY_SQL,
            {
                "units": units,
                "touch": touch_last_assigned,
                "now": timezone.now(),
                "user_id": user_id,
            },
        )
        return cursor.fetchone() is not None


def staff_free_capacity(*, user_id: int, units: int) -> None:
    from django.db.models import F
    from django.db.models.functions import Greatest

    StaffProfile.objects.filter(user_id=user_id).update(
        active_load=Greatest(F("active_load") - units, 0)
    )


def staff_lock_room(*, user_id: int) -> int | None:
    """Lock the person's staff row for this transaction and return their free units."""
    row = (
        StaffProfile.objects.select_for_update()
        .filter(user_id=user_id)
        .values_list("capacity", "active_load")
        .first()
    )
    if row is None:
        return None
    capacity, load = row
    return capacity - load
