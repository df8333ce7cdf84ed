"""The admin as clinic managers use it: sites, departments, skills and staff.

Department membership is membership of the department's group (`accounts.services`), so the
staff page edits it through `staff_set_departments`, never through the group directly.
"""

from __future__ import annotations

from auditlog.mixins import AuditlogHistoryAdminMixin
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, Prefetch

from accounts.models import (
    TIME_ZONES,
    WEEKDAYS,
    Department,
    Site,
    Skill,
    StaffProfile,
    StaffSkill,
)
from accounts.services import (
    department_create,
    membership_changed_by,
    staff_set_availability,
    staff_set_departments,
)
from accounts.signin import audit_record
from accounts.two_factor import two_factor_remove

User = get_user_model()
DAY_NAMES = dict(WEEKDAYS)
DASH = "\N{EN DASH}"


def within_departments_of(user, queryset, user_path: str):
    """Staff rows a supervisor may read in the admin: the people of their own departments.
    Managers and compliance (who may view every department) see everyone."""
    if user.has_perm("accounts.view_department"):
        return queryset
    mine = user.groups.filter(department__isnull=False)
    return queryset.filter(**{f"{user_path}__groups__in": mine}).distinct()


def weekdays_label(days: list[int]) -> str:
    """[0, 1, 2, 3, 4] → "Mon to Fri" (with a dash); [0, 2] → "Mon, Wed"; [] → "every day"."""
    if not days:
        return "every day"
    days = sorted(days)
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{DAY_NAMES[days[0]]}{DASH}{DAY_NAMES[days[-1]]}"
    return ", ".join(DAY_NAMES[day] for day in days)


def weekdays_field(label: str) -> forms.TypedMultipleChoiceField:
    return forms.TypedMultipleChoiceField(
        label=label,
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every day.",
    )


def time_zone_field() -> forms.ChoiceField:
    return forms.ChoiceField(choices=TIME_ZONES, initial="America/New_York")


# --- Sites -------------------------------------------------------------------------------


class SiteForm(forms.ModelForm):
    time_zone = time_zone_field()
    open_weekdays = weekdays_field("Open on")

    class Meta:
        model = Site
        fields = [
            "name",
            "code",
            "time_zone",
            "address",
            "opens_at",
            "closes_at",
            "open_weekdays",
        ]


@admin.register(Site)
class SiteAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = SiteForm
    list_display = ["name", "code", "time_zone", "hours", "open_days"]
    search_fields = ["name", "code"]
    list_filter = ["time_zone"]
    ordering = ["name"]
    prepopulated_fields = {"code": ["name"]}

    @admin.display(description="Hours")
    def hours(self, obj: Site) -> str:
        return f"{obj.opens_at:%H:%M}{DASH}{obj.closes_at:%H:%M}"

    @admin.display(description="Open")
    def open_days(self, obj: Site) -> str:
        return weekdays_label(obj.open_weekdays)


# --- Departments -------------------------------------------------------------------------


class DepartmentForm(forms.ModelForm):
    class Meta:
        model = Department
        fields = ["site", "name", "code", "description"]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        # Each department's staff group is named after it, at every site.
        if self.instance.pk is None and Department.objects.filter(name=name).exists():
            raise forms.ValidationError(
                "A department with this name already exists (perhaps at another site). "
                "Its staff group carries the name, so choose a distinct one, such as "
                "“Billing (Northgate)”."
            )
        return name


@admin.register(Department)
class DepartmentAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = DepartmentForm
    list_display = ["name", "code", "site", "member_count", "queue_count"]
    list_filter = ["site"]
    search_fields = ["name", "code"]
    ordering = ["site__name", "name"]
    autocomplete_fields = ["site"]
    prepopulated_fields = {"code": ["name"]}

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("site", "group")
            .annotate(
                members=Count("group__user", distinct=True),
                queue_total=Count("queues", distinct=True),
            )
        )

    def get_fields(self, request, obj=None):
        fields = ["site", "name", "code", "description"]
        return [*fields, "group"] if obj else fields

    def get_readonly_fields(self, request, obj=None):
        # The group is created with the department and is its membership list from then on.
        return ["group"] if obj else []

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields

    @admin.display(description="Staff", ordering="members")
    def member_count(self, obj: Department) -> int:
        return obj.members

    @admin.display(description="Queues", ordering="queue_total")
    def queue_count(self, obj: Department) -> int:
        return obj.queue_total

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = department_create(
            site=obj.site, name=obj.name, code=obj.code, description=obj.description
        )
        # The admin goes on with `obj` (change message, redirect): make it the saved row.
        obj.pk = created.pk
        obj.group = created.group
        obj._state.adding = False
        obj._state.db = created._state.db


# --- Skills ------------------------------------------------------------------------------


@admin.register(Skill)
class SkillAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = ["name", "code", "holder_count"]
    search_fields = ["name", "code"]
    ordering = ["name"]
    prepopulated_fields = {"code": ["name"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(holders_total=Count("holders"))

    @admin.display(description="Staff with it", ordering="holders_total")
    def holder_count(self, obj: Skill) -> int:
        return obj.holders_total


@admin.register(StaffSkill)
class StaffSkillAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = ["staff", "skill", "level"]
    list_filter = ["skill", "level"]
    list_select_related = ["staff__user", "skill"]
    search_fields = [
        "staff__user__username",
        "staff__user__first_name",
        "staff__user__last_name",
        "skill__name",
        "skill__code",
    ]
    autocomplete_fields = ["staff", "skill"]
    ordering = ["staff__user__username", "skill__name"]

    def get_queryset(self, request):
        return within_departments_of(request.user, super().get_queryset(request), "staff__user")


# --- Staff -------------------------------------------------------------------------------


class StaffSkillInline(admin.TabularInline):
    model = StaffSkill
    extra = 1
    autocomplete_fields = ["skill"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("skill")


class StaffProfileForm(forms.ModelForm):
    departments = forms.ModelMultipleChoiceField(
        queryset=Department.objects.select_related("site"),
        required=False,
        widget=FilteredSelectMultiple("departments", is_stacked=False),
        help_text="Members see and work the department's queues.",
    )
    time_zone = time_zone_field()
    shift_weekdays = weekdays_field("Works on")

    class Meta:
        model = StaffProfile
        fields = [
            "user",
            "sites",
            "capacity",
            "availability",
            "shift_start",
            "shift_end",
            "shift_weekdays",
            "time_zone",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["departments"].initial = Department.objects.filter(
                group__user=self.instance.user_id
            )


class DepartmentListFilter(admin.SimpleListFilter):
    title = "department"
    parameter_name = "department"

    def lookups(self, request, model_admin):
        return [(str(d.pk), d.name) for d in Department.objects.all()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(user__groups__department=self.value())
        return queryset


@admin.register(StaffProfile)
class StaffProfileAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = StaffProfileForm
    inlines = [StaffSkillInline]
    list_display = [
        "username",
        "name",
        "departments",
        "capacity",
        "active_load",
        "availability",
        "shift",
    ]
    list_display_links = ["username", "name"]
    list_filter = ["availability", DepartmentListFilter, "sites"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "user__email"]
    ordering = ["user__username"]
    autocomplete_fields = ["user"]
    filter_horizontal = ["sites"]
    readonly_fields = ["active_load", "last_assigned_at", "availability_changed_at"]
    fieldsets = [
        (None, {"fields": ["user", "departments", "sites"]}),
        (
            "Work",
            {"fields": ["capacity", "active_load", "availability", "availability_changed_at"]},
        ),
        ("Shift", {"fields": ["shift_start", "shift_end", "shift_weekdays", "time_zone"]}),
        ("History", {"fields": ["last_assigned_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        department_groups = Group.objects.filter(department__isnull=False).select_related(
            "department"
        )
        return within_departments_of(
            request.user,
            super()
            .get_queryset(request)
            .select_related("user")
            .prefetch_related(
                Prefetch("user__groups", queryset=department_groups, to_attr="department_groups")
            ),
            "user",
        )

    def get_readonly_fields(self, request, obj=None):
        # Moving a profile to another login would carry its departments along: refuse it.
        return [*self.readonly_fields, "user"] if obj else self.readonly_fields

    @admin.display(description="Username", ordering="user__username")
    def username(self, obj: StaffProfile) -> str:
        return obj.user.username

    @admin.display(description="Name", ordering="user__last_name")
    def name(self, obj: StaffProfile) -> str:
        return obj.user.get_full_name()

    @admin.display(description="Departments")
    def departments(self, obj: StaffProfile) -> str:
        groups = getattr(obj.user, "department_groups", None)
        if groups is None:  # not from the changelist queryset
            return ", ".join(d.name for d in Department.objects.filter(group__user=obj.user))
        return ", ".join(sorted(group.department.name for group in groups))

    @admin.display(description="Shift")
    def shift(self, obj: StaffProfile) -> str:
        if obj.shift_start is None:
            return "any time"
        hours = f"{obj.shift_start:%H:%M}{DASH}{obj.shift_end:%H:%M}"
        return f"{hours} {weekdays_label(obj.shift_weekdays)}"

    def save_model(self, request, obj, form, change):
        availability_changed = change and "availability" in form.changed_data
        if availability_changed:
            obj.availability = form.initial["availability"]
        super().save_model(request, obj, form, change)
        if availability_changed:
            staff_set_availability(profile=obj, availability=form.cleaned_data["availability"])

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        with membership_changed_by(request.user):
            staff_set_departments(
                profile=form.instance, departments=form.cleaned_data["departments"]
            )


# --- Users -------------------------------------------------------------------------------
# Managers add and edit logins (roles are groups), but a manager is not a superuser: they may
# not grant superuser status or raw permissions, nor change a superuser's account or password.

if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class ClinicUserAdmin(UserAdmin):
    actions = ["reset_two_factor"]
    list_display = ["username", "first_name", "last_name", "email", "is_active", "is_staff"]
    list_filter = ["is_active", "is_staff", "groups"]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += ["is_superuser", "user_permissions", "last_login", "date_joined"]
        return readonly

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def save_related(self, request, form, formsets, change):
        # The groups field holds department membership too: a member who leaves hands back
        # that department's work, in the manager's name.
        with membership_changed_by(request.user):
            super().save_related(request, form, formsets, change)

    @admin.action(description="Reset two-factor sign-in of selected users", permissions=["change"])
    def reset_two_factor(self, request, queryset):
        """For a lost phone: the person sets up a new app at their next sign-in (or may go
        without, where their role allows). Where their role requires it, sessions they have
        open end at their next request."""
        if not request.user.is_superuser:
            queryset = queryset.filter(is_superuser=False)
        reset = []
        for user in queryset.order_by("username"):
            if two_factor_remove(user=user):
                audit_record(
                    "OTP_RESET",
                    actor=request.user,
                    request=request,
                    detail={"user": user.get_username(), "by": "admin"},
                )
                reset.append(user.get_username())
        if reset:
            self.message_user(
                request, f"Two-factor sign-in reset for {', '.join(reset)}.", messages.SUCCESS
            )
        else:
            self.message_user(
                request, "None of them had two-factor sign-in set up.", messages.WARNING
            )


# --- Audit -------------------------------------------------------------------------------
# Registered here because every process (web, qcluster, commands) imports the admin modules
# at start-up through admin autodiscovery.

auditlog.register(Site)
auditlog.register(Department)
auditlog.register(Skill)
auditlog.register(
    StaffProfile,
    # Counters the task services keep; the task timeline records each change of them.
    exclude_fields=["active_load", "last_assigned_at"],
    m2m_fields={"sites"},
)
auditlog.register(StaffSkill)
auditlog.register(
    User,
    include_fields=[
        "username",
        "first_name",
        "last_name",
        "email",
        "is_active",
        "is_staff",
        "is_superuser",
    ],
    m2m_fields={"groups"},  # roles and department membership
)
