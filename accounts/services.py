from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts.models import Department, Site, StaffProfile

User = get_user_model()


@transaction.atomic
def department_create(*, site: Site, name: str, code: str, description: str = "") -> Department:
    """A department and the group whose members are its staff."""
    group, _ = Group.objects.get_or_create(name=f"Department: {name}")
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
    current = set(
        user.groups.filter(department__isnull=False).values_list("id", flat=True)
    )
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
