"""Sign-in (password, then a second factor where one is needed or set up), the recovery codes
page, and the person's own Account security page."""

from __future__ import annotations

import django_otp
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import CodeForm
from accounts.signin import (
    NAV_ROLES_SESSION_KEY,  # noqa: F401  (read by the menu's context processor)
    PASSWORD,
    PASSWORD_AND_CODE,
    RECOVERY_CODES_NEXT_KEY,
    SIGNED_IN_WITH_KEY,
    audit_record,
    pending_clear,
    pending_next,
    pending_start,
    pending_user,
    signin_complete,
)
from accounts.two_factor import (
    app_device,
    app_device_confirm,
    app_device_start,
    key_base32,
    qr_svg,
    recovery_codes_generate,
    recovery_codes_left,
    two_factor_remove,
    two_factor_required,
    two_factor_verify,
    two_factor_wait_seconds,
)

CODE_WRONG = "That code is not right. Check the time on your phone and try the newest code."
RECOVERY_LOW = 3


class LoginView(auth_views.LoginView):
    """Django's log-in form as the first step: a person who needs or has a second factor is
    not signed in yet but sent on to the code step (or to set up an app, the first time)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        has_app = app_device(user) is not None
        if has_app or two_factor_required(user):
            pending_start(self.request, user=user, redirect_to=self.get_success_url())
            return redirect("accounts:signin_code" if has_app else "accounts:signin_setup")
        signin_complete(self.request, user=user)
        return redirect(self.get_success_url())


@never_cache
@sensitive_post_parameters("otp_token")
@require_http_methods(["GET", "POST"])
def signin_code(request):
    user = pending_user(request)
    if user is None:
        return _pending_expired(request)
    if app_device(user) is None:
        return redirect("accounts:signin_setup")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if _locked_out(request, user):
            return _lockout(request, user)
        wait = two_factor_wait_seconds(user)
        if wait:
            form.add_error(None, _wait_message(wait))
        else:
            verified = two_factor_verify(user=user, code=form.cleaned_data["otp_token"])
            if verified is not None:
                next_url = pending_next(request)
                signin_complete(request, user=user, device=verified.device)
                if verified.recovery:
                    _recovery_used(request, user, verified.recovery_left)
                return redirect(next_url or settings.LOGIN_REDIRECT_URL)
            if _code_failed(request, user, step="sign-in"):
                return _lockout(request, user)
            form.add_error("otp_token", CODE_WRONG)
    return render(request, "registration/signin_code.html", {"form": form})


@never_cache
@sensitive_post_parameters("otp_token")
@require_http_methods(["GET", "POST"])
def signin_setup(request):
    """First sign-in of someone who must use a second factor: set up the app, then in."""
    user = pending_user(request, enrolling=True)
    if user is None:
        return _pending_expired(request)
    if app_device(user) is not None:
        return redirect("accounts:signin_code")
    device = app_device_start(user=user)
    form = CodeForm(request.POST or None, recovery=False)
    if request.method == "POST" and form.is_valid():
        if _locked_out(request, user):
            return _lockout(request, user)
        wait = two_factor_wait_seconds(user)
        if wait:
            form.add_error(None, _wait_message(wait))
        elif app_device_confirm(device=device, code=form.cleaned_data["otp_token"]):
            device.refresh_from_db()
            audit_record(
                "OTP_ENROLLED",
                actor=user,
                request=request,
                detail={"during": "sign-in"},
            )
            next_url = pending_next(request)
            signin_complete(request, user=user, device=device)
            request.session[RECOVERY_CODES_NEXT_KEY] = next_url
            return redirect("accounts:recovery_codes")
        elif _code_failed(request, user, step="set-up"):
            return _lockout(request, user)
        else:
            form.add_error("otp_token", CODE_WRONG)
    context = {"form": form, "qr": qr_svg(device), "key": key_base32(device), "person": user}
    return render(request, "registration/signin_setup.html", context)


@never_cache
@login_required
def recovery_codes(request):
    """Ten new recovery codes, shown once: only right after setting up the app or asking for
    new ones (a note in the session), never again on a reload."""
    next_url = request.session.pop(RECOVERY_CODES_NEXT_KEY, None)
    if next_url is None:
        return redirect("accounts:security")
    codes = recovery_codes_generate(user=request.user)
    next_url = next_url or resolve_url(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/recovery_codes.html", {"codes": codes, "next": next_url})


# --- Account security ---------------------------------------------------------------------


@never_cache
@login_required
def security(request):
    user = request.user
    device = app_device(user)
    context = {
        "device": device,
        "required": two_factor_required(user),
        "recovery_left": recovery_codes_left(user) if device else 0,
        "form": CodeForm(),
    }
    return render(request, "accounts/security.html", context)


@never_cache
@login_required
@sensitive_post_parameters("otp_token")
@require_http_methods(["GET", "POST"])
def security_setup(request):
    user = request.user
    if app_device(user) is not None:
        messages.info(request, "Two-factor sign-in is already set up.")
        return redirect("accounts:security")
    device = app_device_start(user=user)
    form = CodeForm(request.POST or None, recovery=False)
    if request.method == "POST" and form.is_valid():
        wait = two_factor_wait_seconds(user)
        if wait:
            form.add_error(None, _wait_message(wait))
        elif app_device_confirm(device=device, code=form.cleaned_data["otp_token"]):
            device.refresh_from_db()
            audit_record(
                "OTP_ENROLLED",
                actor=user,
                request=request,
                detail={"during": "account security"},
            )
            django_otp.login(request, device)
            request.session[SIGNED_IN_WITH_KEY] = PASSWORD_AND_CODE
            request.session[RECOVERY_CODES_NEXT_KEY] = reverse("accounts:security")
            return redirect("accounts:recovery_codes")
        else:
            _code_failed(request, user, step="set-up", count_for_lockout=False)
            form.add_error("otp_token", CODE_WRONG)
    context = {"form": form, "qr": qr_svg(device), "key": key_base32(device), "person": user}
    return render(request, "accounts/security_setup.html", context)


@login_required
@sensitive_post_parameters("otp_token")
@require_POST
def security_new_codes(request):
    """New recovery codes, confirmed with a current code: a borrowed session alone cannot
    mint itself a way past the second step."""
    if _confirm_with_code(request):
        request.session[RECOVERY_CODES_NEXT_KEY] = reverse("accounts:security")
        return redirect("accounts:recovery_codes")
    return redirect("accounts:security")


@login_required
@sensitive_post_parameters("otp_token")
@require_POST
def security_turn_off(request):
    user = request.user
    if two_factor_required(user):
        raise PermissionDenied("Your role signs in with a second factor; it cannot be turned off.")
    if _confirm_with_code(request):
        two_factor_remove(user=user)
        audit_record(
            "OTP_RESET",
            actor=user,
            request=request,
            detail={"user": user.get_username(), "by": "self"},
        )
        request.session[SIGNED_IN_WITH_KEY] = PASSWORD
        messages.success(request, "Two-factor sign-in is off. You sign in with your password.")
    return redirect("accounts:security")


# --- The admin site's own sign-in page leads to ours ----------------------------------------


def admin_login(request, extra_context=None):
    """Stands in for the admin's log-in page, which would sign in with a password alone."""
    if request.user.is_authenticated:
        # Signed in but not let into the admin (not staff): not a reason to sign in again.
        raise PermissionDenied("The admin is for clinic managers.")
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"))


@login_required
@require_POST
def keepalive(request):
    """The idle warning's “Stay signed in”: any request refreshes the idle clock."""
    return HttpResponse(status=204)


# --- Helpers ------------------------------------------------------------------------------


def _credentials(user) -> dict:
    return {settings.AXES_USERNAME_FORM_FIELD: user.get_username()}


def _locked_out(request, user) -> bool:
    return AxesProxyHandler.is_locked(request, _credentials(user))


def _lockout(request, user):
    """The lockout page, as after too many wrong passwords (django-axes' middleware renders
    it for a request it finds flagged)."""
    pending_clear(request)
    request.axes_locked_out = True
    request.axes_credentials = _credentials(user)
    return HttpResponse(status=429)


def _code_failed(request, user, *, step: str, count_for_lockout: bool = True) -> bool:
    """Record a wrong code; at sign-in it also counts as a failed sign-in for the lockout.
    True when that failure locked the account out."""
    audit_record("OTP_FAILED", actor=user, request=request, detail={"step": step})
    if not count_for_lockout:
        return False
    AxesProxyHandler.user_login_failed(
        sender=signin_code, credentials=_credentials(user), request=request
    )
    return bool(getattr(request, "axes_locked_out", False))


def _recovery_used(request, user, left: int) -> None:
    audit_record("RECOVERY_USED", actor=user, request=request, detail={"left": left})
    if left <= RECOVERY_LOW:
        messages.warning(
            request,
            f"You have {left} recovery code{'s' if left != 1 else ''} left. "
            "Make new ones on your Account security page.",
        )


def _confirm_with_code(request) -> bool:
    form = CodeForm(request.POST)
    user = request.user
    if not form.is_valid():
        messages.error(request, "Enter a code from your authenticator app.")
        return False
    wait = two_factor_wait_seconds(user)
    if wait:
        messages.error(request, _wait_message(wait))
        return False
    verified = two_factor_verify(user=user, code=form.cleaned_data["otp_token"])
    if verified is None:
        _code_failed(request, user, step="account security", count_for_lockout=False)
        messages.error(request, CODE_WRONG)
        return False
    if verified.recovery:
        _recovery_used(request, user, verified.recovery_left)
    return True


def _wait_message(seconds: int) -> str:
    return (
        f"Too many wrong codes in a row. Wait {seconds} second{'s' if seconds != 1 else ''} "
        "and try again."
    )


def _pending_expired(request):
    messages.info(request, "Your sign-in took too long or was interrupted. Sign in again.")
    return redirect("accounts:login")
