from __future__ import annotations

import zoneinfo
from datetime import datetime, time

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

WEEKDAYS = [(0, "Mon"), (1, "Tue"), (2, "Wed"), (3, "Thu"), (4, "Fri"), (5, "Sat"), (6, "Sun")]
TIME_ZONES = sorted((tz, tz) for tz in zoneinfo.available_timezones() if "/" in tz)


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"“{value}” is not a time zone. Use a name such as America/New_York."
        ) from None


def validate_weekdays(value: list[int]) -> None:
    bad = [day for day in value if day not in range(7)]
    if bad:
        raise ValidationError("Weekdays are numbers from 0 (Monday) to 6 (Sunday).")


def in_window(moment: time, start: time | None, end: time | None) -> bool:
    """Whether a local time lies in [start, end), a window that may wrap past midnight."""
    if start is None or end is None:
        return True
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


class Site(models.Model):
    """A clinic location. A group practice often has several."""

    name = models.CharField(max_length=120, unique=True)
    code = models.SlugField(max_length=40, unique=True)
    time_zone = models.CharField(
        max_length=64, default="America/New_York", validators=[validate_time_zone]
    )
    address = models.TextField(blank=True)
    opens_at = models.TimeField(default=time(8, 0), help_text="Front desk opening time.")
    closes_at = models.TimeField(default=time(17, 0), help_text="Front desk closing time.")
    open_weekdays = ArrayField(
        models.PositiveSmallIntegerField(),
        default=list,
        blank=True,
        validators=[validate_weekdays],
        help_text="0 = Monday … 6 = Sunday. Empty means open every day.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        if self.open_weekdays and local.weekday() not in self.open_weekdays:
            return False
        return in_window(local.time(), self.opens_at, self.closes_at)


class Department(models.Model):
    """A team that owns work. Its members are the users of its group."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="departments")
    name = models.CharField(max_length=120)
    code = models.SlugField(max_length=40, unique=True)
    group = models.OneToOneField(
        Group,
        on_delete=models.PROTECT,
        related_name="department",
        help_text="Members of this group are the department's staff.",
    )
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["site__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="department_unique_name_per_site")
        ]

    def __str__(self) -> str:
        return self.name


class Skill(models.Model):
    code = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StaffProfile(models.Model):
    class Availability(models.TextChoices):
        AVAILABLE = "available", "Available"
        AWAY = "away", "Away"
        OFFLINE = "offline", "Offline"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="staff"
    )
    sites = models.ManyToManyField(Site, blank=True, related_name="staff")
    capacity = models.PositiveSmallIntegerField(
        default=5,
        validators=[MaxValueValidator(100)],
        help_text="Units of concurrent active work (a task type's weight counts against it).",
    )
    active_load = models.PositiveSmallIntegerField(
        default=0, editable=False, help_text="Units in use now; kept by the task services."
    )
    availability = models.CharField(
        max_length=10, choices=Availability.choices, default=Availability.OFFLINE
    )
    shift_start = models.TimeField(null=True, blank=True)
    shift_end = models.TimeField(null=True, blank=True)
    shift_weekdays = ArrayField(
        models.PositiveSmallIntegerField(),
        default=list,
        blank=True,
        validators=[validate_weekdays],
        help_text="0 = Monday … 6 = Sunday. Empty means every day.",
    )
    time_zone = models.CharField(
        max_length=64, default="America/New_York", validators=[validate_time_zone]
    )
    last_assigned_at = models.DateTimeField(null=True, blank=True, editable=False)
    availability_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["user__username"]
        constraints = [
            models.CheckConstraint(
                condition=Q(active_load__gte=0), name="staff_active_load_not_negative"
            ),
            models.CheckConstraint(
                condition=(Q(shift_start__isnull=True) & Q(shift_end__isnull=True))
                | (Q(shift_start__isnull=False) & Q(shift_end__isnull=False)),
                name="staff_shift_start_and_end_together",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.user.get_full_name() or self.user.username

    def clean(self) -> None:
        if (self.shift_start is None) != (self.shift_end is None):
            raise ValidationError(
                {"shift_end": "Give both the start and the end of the shift, or neither."}
            )

    def on_shift(self, moment: datetime) -> bool:
        local = moment.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        if self.shift_weekdays and local.weekday() not in self.shift_weekdays:
            return False
        return in_window(local.time(), self.shift_start, self.shift_end)


class StaffSkill(models.Model):
    staff = models.ForeignKey(StaffProfile, on_delete=models.CASCADE, related_name="skills")
    skill = models.ForeignKey(Skill, on_delete=models.PROTECT, related_name="holders")
    level = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="1 = learning … 5 = expert.",
    )

    class Meta:
        ordering = ["skill__name"]
        constraints = [
            models.UniqueConstraint(fields=["staff", "skill"], name="staffskill_unique"),
            models.CheckConstraint(
                condition=Q(level__gte=1) & Q(level__lte=5), name="staffskill_level_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.skill} (level {self.level})"
