import pytest
from django.urls import reverse

from accounts.tests.factories import UserFactory
from accounts.tests.two_factor_support import sign_in

pytestmark = pytest.mark.django_db


def sign_in_and_open_home(client, user):
    response = sign_in(client, user)
    assert response.status_code == 302
    return client.get(reverse("queues:holding")).content.decode()


@pytest.mark.parametrize("role", ["Supervisor", "Manager", "Compliance"])
def test_roles_that_read_escalations_find_them_in_the_menu(client, role):
    page = sign_in_and_open_home(client, UserFactory(roles=[role]))
    assert f'href="{reverse("escalation:list")}"' in page


def test_an_agent_has_no_escalations_link(client):
    page = sign_in_and_open_home(client, UserFactory(roles=["Agent"]))
    assert reverse("escalation:list") not in page


@pytest.mark.parametrize(
    ("role", "log_a_request", "failed_intake"),
    [
        ("Agent", True, False),
        ("Supervisor", True, True),
        ("Manager", False, True),
        ("Compliance", False, True),
    ],
)
def test_intake_links_follow_the_role(client, role, log_a_request, failed_intake):
    page = sign_in_and_open_home(client, UserFactory(roles=[role]))
    assert (f'href="{reverse("queues:intake_new")}"' in page) is log_a_request
    assert (f'href="{reverse("queues:intake_failed")}"' in page) is failed_intake


@pytest.mark.parametrize(
    ("role", "dashboard", "audit"),
    [
        ("Agent", False, False),
        ("Supervisor", True, False),
        ("Manager", True, True),
        ("Compliance", True, True),
    ],
)
def test_dashboard_and_audit_links_follow_the_role(client, role, dashboard, audit):
    page = sign_in_and_open_home(client, UserFactory(roles=[role]))
    assert (f'href="{reverse("dashboard:index")}"' in page) is dashboard
    assert (f'href="{reverse("audit:search")}"' in page) is audit
