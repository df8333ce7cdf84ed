import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill
from accounts.tests.factories import (
    DepartmentFactory,
    SiteFactory,
    SkillFactory,
    StaffProfileFactory,
    StaffSkillFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(client):
    """Robert, a clinic manager: in the admin, but not a superuser."""
    robert = UserFactory(username="robert", roles=["Manager"], is_staff=True)
    client.force_login(robert)
    return robert


@pytest.fixture
def billing():
    return DepartmentFactory(name="Billing", code="billing")


@pytest.fixture
def triage():
    return DepartmentFactory(name="Clinical triage", code="triage")


@pytest.fixture
def alice(billing):
    """Alice, a billing agent with one skill."""
    profile = StaffProfileFactory(
        user=UserFactory(username="alice", first_name="Alice", last_name="Archer"),
        departments=[billing],
    )
    StaffSkillFactory(staff=profile, skill=SkillFactory(code="payer-appeals"), level=4)
    return profile


def changelist(model) -> str:
    return reverse(f"admin:accounts_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:accounts_{obj._meta.model_name}_change", args=[obj.pk])


def staff_form(profile, *, departments, **overrides) -> dict:
    data = {
        "departments": [d.pk for d in departments],
        "sites": [],
        "capacity": profile.capacity,
        "availability": profile.availability,
        "shift_start": "08:00",
        "shift_end": "17:00",
        "shift_weekdays": ["0", "1", "2", "3", "4"],
        "time_zone": "America/New_York",
        "skills-TOTAL_FORMS": "0",
        "skills-INITIAL_FORMS": "0",
        "skills-MIN_NUM_FORMS": "0",
        "skills-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("model", [Site, Department, Skill, StaffProfile, StaffSkill])
def test_manager_opens_every_changelist_and_add_page(client, manager, alice, model):
    assert client.get(changelist(model)).status_code == 200
    add = reverse(f"admin:accounts_{model._meta.model_name}_add")
    assert client.get(add).status_code == 200


def test_manager_opens_every_change_page(client, manager, alice, billing):
    held = alice.skills.get()
    for obj in [billing.site, billing, held.skill, alice, held]:
        assert client.get(change(obj)).status_code == 200, obj


def test_staff_changelist_lists_departments_from_group_membership(client, manager, alice, triage):
    triage.group.user_set.add(alice.user)

    response = client.get(changelist(StaffProfile))

    assert "Billing, Clinical triage" in response.content.decode()


def test_staff_changelist_query_count_does_not_grow_with_staff(client, manager, alice, billing):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(changelist(StaffProfile)).status_code == 200
        return len(queries)

    count_queries()  # the first page also records the idle clock in the session
    one = count_queries()
    for _ in range(4):
        StaffProfileFactory(departments=[billing])

    assert count_queries() == one


def test_staff_search_finds_by_name(client, manager, alice):
    StaffProfileFactory(user=UserFactory(username="bob", first_name="Bob", last_name="Baker"))

    response = client.get(changelist(StaffProfile), {"q": "archer"})

    assert list(response.context["cl"].result_list) == [alice]


@pytest.mark.parametrize(
    ("model", "term"), [(Site, "Main Street"), (Department, "billing"), (Skill, "payer")]
)
def test_search_finds_configuration(client, manager, alice, model, term):
    response = client.get(changelist(model), {"q": term})

    assert response.context["cl"].result_count == 1


def test_saving_staff_departments_updates_the_users_groups(client, manager, alice, billing, triage):
    other_group = Group.objects.create(name="Float pool newsletter")
    alice.user.groups.add(other_group)

    response = client.post(change(alice), staff_form(alice, departments=[triage]))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert set(alice.user.groups.all()) == {triage.group, other_group}


def test_changing_availability_in_the_admin_stamps_the_time(client, manager, alice, billing):
    response = client.post(
        change(alice), staff_form(alice, departments=[billing], availability="away")
    )

    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.availability == "away"
    assert alice.availability_changed_at is not None


def test_staff_skills_are_edited_inline(client, manager, alice, billing):
    spanish = SkillFactory(code="spanish")
    held = alice.skills.get()
    data = staff_form(alice, departments=[billing])
    data.update(
        {
            "skills-TOTAL_FORMS": "2",
            "skills-INITIAL_FORMS": "1",
            "skills-0-id": held.pk,
            "skills-0-staff": alice.pk,
            "skills-0-skill": held.skill_id,
            "skills-0-level": "5",
            "skills-1-staff": alice.pk,
            "skills-1-skill": spanish.pk,
            "skills-1-level": "2",
        }
    )

    response = client.post(change(alice), data)

    assert response.status_code == 302
    assert dict(alice.skills.values_list("skill__code", "level")) == {
        "payer-appeals": 5,
        "spanish": 2,
    }


def test_creating_a_department_creates_its_group(client, manager):
    site = SiteFactory()

    response = client.post(
        reverse("admin:accounts_department_add"),
        {"site": site.pk, "name": "Referral intake", "code": "referrals", "description": ""},
    )

    assert response.status_code == 302
    department = Department.objects.get(code="referrals")
    assert department.group.name.startswith("Department: Referral intake")


def test_a_department_name_taken_at_another_site_is_refused(client, manager, billing):
    response = client.post(
        reverse("admin:accounts_department_add"),
        {"site": SiteFactory().pk, "name": "Billing", "code": "billing-2", "description": ""},
    )

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors


def test_department_group_is_read_only_after_creation(client, manager, billing):
    response = client.get(change(billing))

    assert "group" not in response.context["adminform"].form.fields


def test_department_change_is_audited_with_the_manager(client, manager, billing):
    response = client.post(
        change(billing),
        {"site": billing.site_id, "name": "Billing", "code": "billing", "description": "Claims"},
    )

    assert response.status_code == 302
    entry = LogEntry.objects.get_for_object(billing).latest("timestamp")
    assert entry.actor == manager
    assert entry.changes_dict["description"] == ["", "Claims"]


def test_manager_cannot_make_anyone_superuser(client, manager):
    response = client.get(reverse("admin:auth_user_change", args=[manager.pk]))

    assert "is_superuser" not in response.context["adminform"].form.fields
    assert "user_permissions" not in response.context["adminform"].form.fields


def test_manager_cannot_change_a_superusers_password(client, manager):
    root = UserFactory(username="root", is_superuser=True, is_staff=True)

    response = client.get(reverse("admin:auth_user_password_change", args=[root.pk]))

    assert response.status_code == 403


def test_staff_profile_user_autocomplete_finds_logins(client, manager, alice):
    query = {"app_label": "accounts", "model_name": "staffprofile", "field_name": "user"}

    response = client.get(reverse("admin:autocomplete"), {**query, "term": "ali"})

    assert response.status_code == 200
    assert [row["text"] for row in response.json()["results"]] == ["alice"]
