import re
import time

import pytest
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.signin import PENDING_KEY, SIGNED_IN_AT_KEY
from accounts.tests.factories import PASSWORD, UserFactory
from accounts.tests.two_factor_support import (
    CODE_STEP,
    LOGIN,
    SET_UP_STEP,
    app_code,
    code_from_key,
    enrol,
    sign_in,
)
from clinicdesk.audit.models import AuditEvent
from clinicdesk.roles import AGENT, COMPLIANCE, MANAGER, SUPERVISOR

pytestmark = pytest.mark.django_db

HOME = reverse("home")
SECURITY = reverse("accounts:security")
RECOVERY = reverse("accounts:recovery_codes")


@pytest.fixture
def maria():
    """A manager: the admin is her page."""
    return UserFactory(username="maria", is_staff=True, roles=[MANAGER])


@pytest.fixture
def sam():
    return UserFactory(username="sam", roles=[SUPERVISOR])


@pytest.fixture
def alice():
    return UserFactory(username="alice", roles=[AGENT])


def password_step(client, user, next_url="", **extra):
    data = {"username": user.username, "password": PASSWORD}
    if next_url:
        data["next"] = next_url
    return client.post(LOGIN, data, **extra)


def code_step(client, code, **extra):
    return client.post(CODE_STEP, {"otp_token": code}, **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def kinds() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))


def recovery_codes_on(page: str) -> list[str]:
    return re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", page)


# --- First sign-in of a manager: set up the app, recovery codes once ----------------------------


def test_a_managers_first_sign_in_sets_up_the_app_then_shows_ten_recovery_codes_once(client, maria):
    response = password_step(client, maria)

    assert response["Location"] == SET_UP_STEP
    assert not signed_in(client)
    page = client.get(SET_UP_STEP).content.decode()
    assert "<svg" in page and "Set up two-factor sign-in" in page
    key = re.search(r"<code data-setup-key>([A-Z2-7 ]+)</code>", page).group(1)
    assert client.get(HOME).status_code == 302  # still not signed in

    response = client.post(SET_UP_STEP, {"otp_token": code_from_key(key)})

    assert response["Location"] == RECOVERY
    assert signed_in(client)
    codes = recovery_codes_on(client.get(RECOVERY).content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get(RECOVERY)["Location"] == SECURITY  # never shown again
    assert TOTPDevice.objects.get(user=maria).confirmed
    assert kinds() == ["otp_enrolled", "login"]
    audit = str(list(AuditEvent.objects.values()))
    assert key.replace(" ", "") not in audit and codes[0] not in audit


def test_the_set_up_page_keeps_its_key_when_reloaded(client, sam):
    password_step(client, sam)
    first = client.get(SET_UP_STEP).content.decode()
    again = client.get(SET_UP_STEP).content.decode()

    key = re.compile(r"<code data-setup-key>([A-Z2-7 ]+)</code>")
    assert key.search(first).group(1) == key.search(again).group(1)


def test_a_wrong_set_up_code_leaves_the_person_signed_out(client, sam):
    password_step(client, sam)
    client.get(SET_UP_STEP)

    response = client.post(SET_UP_STEP, {"otp_token": "000000"})

    assert response.status_code == 200
    assert "That code is not right" in response.content.decode()
    assert not signed_in(client)
    assert not TOTPDevice.objects.filter(user=sam, confirmed=True).exists()
    assert kinds() == ["otp_failed"]


# --- The code step -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [MANAGER, SUPERVISOR, COMPLIANCE])
def test_a_password_alone_does_not_sign_in_a_required_role(client, role):
    person = UserFactory(roles=[role])
    enrol(person)

    response = password_step(client, person)

    assert response["Location"] == CODE_STEP
    assert not signed_in(client)
    assert client.get(HOME).status_code == 302


def test_the_app_code_signs_in_with_a_new_session_id_each_step(client, sam):
    device = enrol(sam)
    client.get(LOGIN)
    password_step(client, sam, next_url="/holding/")
    pending_session = client.session.session_key

    response = code_step(client, app_code(device))

    assert response["Location"] == "/holding/"
    assert signed_in(client)
    assert client.session.session_key != pending_session
    assert client.session.get(PENDING_KEY) is None
    assert client.get(HOME).status_code == 200


def test_the_password_step_gives_a_new_session_id(client, sam):
    enrol(sam)
    client.get(LOGIN)
    session = client.session
    session["planted"] = True
    session.save()
    client.cookies["sessionid"] = session.session_key

    password_step(client, sam)

    assert client.session.session_key != session.session_key
    assert not Session.objects.filter(session_key=session.session_key).exists()


def test_an_agents_sign_in_gives_a_new_session_id(client, alice):
    client.get(LOGIN)
    session = client.session
    session.save()

    password_step(client, alice)

    assert signed_in(client)
    assert client.session.session_key != session.session_key


def test_a_code_works_only_once(client, sam):
    device = enrol(sam)
    password_step(client, sam)
    code = app_code(device)
    code_step(client, code)
    client.post(reverse("accounts:logout"))

    password_step(client, sam)
    response = code_step(client, code)

    assert response.status_code == 200
    assert "That code is not right" in response.content.decode()
    assert not signed_in(client)


def test_a_recovery_code_signs_in_once_and_is_recorded(client, sam):
    enrol(sam)
    sign_in(client, sam)
    client.post(
        reverse("accounts:security_new_codes"), {"otp_token": app_code(sam.totpdevice_set.get())}
    )
    codes = recovery_codes_on(client.get(RECOVERY).content.decode())
    client.post(reverse("accounts:logout"))

    password_step(client, sam)
    response = code_step(client, codes[3].upper().replace("-", " "))  # as typed from paper

    assert response.status_code == 302 and signed_in(client)
    used = AuditEvent.objects.get(kind=AuditEvent.Kind.RECOVERY_USED)
    assert used.detail == {"left": 9}
    assert codes[3].replace("-", "") not in str(used.detail)
    client.post(reverse("accounts:logout"))

    password_step(client, sam)
    assert code_step(client, codes[3]).status_code == 200
    assert not signed_in(client)
    assert StaticToken.objects.filter(device__user=sam).count() == 9


def test_wrong_codes_count_towards_the_sign_in_lockout(client, sam, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # django-otp's own pause would slow the test
    device = enrol(sam)
    password_step(client, sam, REMOTE_ADDR="10.1.2.3")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = code_step(client, "123456", REMOTE_ADDR="10.1.2.3")
        assert response.status_code == 200

    response = code_step(client, "123456", REMOTE_ADDR="10.1.2.3")

    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert kinds() == ["otp_failed"] * settings.AXES_FAILURE_LIMIT
    # The pending sign-in is gone, and the password step is paused too, right code or not.
    assert client.get(CODE_STEP)["Location"] == LOGIN
    assert password_step(client, sam, REMOTE_ADDR="10.1.2.3").status_code == 429
    assert code_step(client, app_code(device), REMOTE_ADDR="10.1.2.3")["Location"] == LOGIN
    assert not signed_in(client)


def test_django_otp_pauses_between_wrong_codes(client, sam):
    device = enrol(sam)
    password_step(client, sam)
    code_step(client, "123456")

    response = code_step(client, app_code(device))  # at once: within the one-second pause

    assert "Wait 1 second and try again" in response.content.decode()
    assert not signed_in(client)


def test_the_code_step_expires_five_minutes_after_the_password(client, sam):
    device = enrol(sam)
    password_step(client, sam)
    session = client.session
    session[PENDING_KEY]["at"] = time.time() - 5 * 60 - 1
    session.save()

    response = code_step(client, app_code(device))

    assert response["Location"] == LOGIN
    assert not signed_in(client)


def test_the_code_step_without_a_password_step_goes_back_to_sign_in(client):
    assert client.get(CODE_STEP)["Location"] == LOGIN
    assert client.get(SET_UP_STEP)["Location"] == LOGIN


# --- The admin ----------------------------------------------------------------------------------


def test_the_admins_own_sign_in_page_leads_to_ours(client):
    response = client.get(reverse("admin:login"), {"next": "/admin/queues/"})

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=/admin/queues/"


def test_a_manager_reaches_the_admin_after_both_steps(client, maria):
    enrol(maria)
    sign_in(client, maria, next_url="/admin/")

    assert client.get(reverse("admin:index")).status_code == 200


def test_a_password_only_session_of_someone_now_required_ends(client, alice):
    # Alice signed in as an agent, with her password alone; then she was made a manager.
    sign_in(client, alice)
    alice.is_staff = True
    alice.save()

    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)
    assert not signed_in(client)


def test_a_manager_resets_a_persons_two_factor_in_the_admin(client, maria, sam):
    enrol(maria)
    sign_in(client, maria)
    enrol(sam)
    sam_client = client.__class__()
    sign_in(sam_client, sam)
    assert sam_client.get(HOME).status_code == 200

    response = client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "reset_two_factor", "_selected_action": [sam.pk]},
    )

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=sam).exists()
    reset = AuditEvent.objects.get(kind=AuditEvent.Kind.OTP_RESET)
    assert (reset.user, reset.detail) == (maria, {"user": "sam", "by": "admin"})
    # Sam's session was verified by the app that is gone: it ends; he sets up a new one.
    assert sam_client.get(HOME).status_code == 302
    assert password_step(sam_client, sam)["Location"] == SET_UP_STEP


# --- Agents: optional, from Account security -----------------------------------------------------


def test_an_agent_signs_in_with_a_password_and_may_set_up_two_factor(client, alice):
    response = password_step(client, alice)
    assert response["Location"] == reverse("queues:my_work")
    assert "Off: you sign in with your password alone." in client.get(SECURITY).content.decode()

    page = client.get(reverse("accounts:security_setup")).content.decode()
    key = re.search(r"<code data-setup-key>([A-Z2-7 ]+)</code>", page).group(1)
    response = client.post(reverse("accounts:security_setup"), {"otp_token": code_from_key(key)})

    assert response["Location"] == RECOVERY
    assert len(recovery_codes_on(client.get(RECOVERY).content.decode())) == 10
    assert "Recovery codes left: <strong>10</strong>" in client.get(SECURITY).content.decode()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.OTP_ENROLLED, user=alice).exists()
    client.post(reverse("accounts:logout"))
    assert password_step(client, alice)["Location"] == CODE_STEP


def test_an_agent_may_turn_two_factor_off_with_a_code(client, alice):
    device = enrol(alice)
    sign_in(client, alice)

    response = client.post(reverse("accounts:security_turn_off"), {"otp_token": app_code(device)})

    assert response["Location"] == SECURITY
    assert not TOTPDevice.objects.filter(user=alice).exists()
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.OTP_RESET).detail == {
        "user": "alice",
        "by": "self",
    }
    assert client.get(HOME).status_code == 200
    client.post(reverse("accounts:logout"))
    assert password_step(client, alice)["Location"] == reverse("queues:my_work")


def test_a_supervisor_cannot_turn_two_factor_off(client, sam):
    device = enrol(sam)
    sign_in(client, sam)

    response = client.post(reverse("accounts:security_turn_off"), {"otp_token": app_code(device)})

    assert response.status_code == 403
    assert TOTPDevice.objects.filter(user=sam).exists()


def test_new_recovery_codes_need_a_current_code_and_cancel_the_old_ones(client, alice, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = enrol(alice)
    sign_in(client, alice)
    new_codes = reverse("accounts:security_new_codes")

    assert client.post(new_codes, {"otp_token": "000000"})["Location"] == SECURITY
    assert client.get(RECOVERY)["Location"] == SECURITY  # nothing made
    client.post(new_codes, {"otp_token": app_code(device)})
    first = recovery_codes_on(client.get(RECOVERY).content.decode())
    client.post(new_codes, {"otp_token": first[0]})
    second = recovery_codes_on(client.get(RECOVERY).content.decode())

    remaining = set(StaticToken.objects.filter(device__user=alice).values_list("token", flat=True))
    assert remaining == {code.replace("-", "") for code in second}
    assert not remaining & {code.replace("-", "") for code in first}


# --- Sessions ------------------------------------------------------------------------------------


def test_a_session_ends_its_max_hours_after_sign_in_however_active(client, alice, settings):
    settings.SESSION_MAX_HOURS = 12
    sign_in(client, alice)
    session = client.session
    session[SIGNED_IN_AT_KEY] = time.time() - 12 * 3600 - 5
    session.save()

    response = client.get(HOME)

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=%2F"
    assert not signed_in(client)
    assert "time limit" in client.get(response["Location"]).content.decode()


def test_a_session_within_its_max_hours_goes_on(client, alice):
    sign_in(client, alice)
    session = client.session
    session[SIGNED_IN_AT_KEY] = time.time() - 11 * 3600
    session.save()

    assert client.get(HOME).status_code == 200


def test_signing_out_deletes_the_session_on_the_server(client, sam):
    enrol(sam)
    sign_in(client, sam)
    old_cookie = client.cookies["sessionid"].value
    assert Session.objects.filter(session_key=old_cookie).exists()

    client.post(reverse("accounts:logout"))

    assert not Session.objects.filter(session_key=old_cookie).exists()
    client.cookies["sessionid"] = old_cookie  # a copy of the cookie kept from before
    assert client.get(HOME).status_code == 302


# --- Passwords -----------------------------------------------------------------------------------


def test_new_passwords_are_hashed_with_argon2(settings, alice):
    from clinicdesk import settings as project_settings

    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    alice.set_password("a long clinic passphrase")
    alice.save()

    alice.refresh_from_db()
    assert alice.password.startswith("argon2$argon2id$")
    assert alice.check_password("a long clinic passphrase")


def test_a_common_password_is_refused():
    with pytest.raises(ValidationError, match="too common"):
        validate_password("password123")


@pytest.mark.parametrize(
    "password", ["Hospital2024!", "Welcome1", "Nur5e#2024", "#1Summer", "alice99"]
)
def test_a_clinic_word_with_digits_and_symbols_is_refused(password, alice):
    with pytest.raises(ValidationError, match="common word with numbers or symbols"):
        validate_password(password, user=alice)


def test_a_passphrase_passes_every_validator(alice):
    validate_password("ledger maple harbour quietly", user=alice)
