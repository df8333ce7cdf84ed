"""Signing in as a person would, second step included: codes are computed from the device's
key exactly as an authenticator app computes them (RFC 6238), never read from the server."""

from __future__ import annotations

import re
import time
from base64 import b32decode

from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.tests.factories import PASSWORD

LOGIN = reverse("accounts:login")
CODE_STEP = reverse("accounts:signin_code")
SET_UP_STEP = reverse("accounts:signin_setup")


def app_code(device: TOTPDevice) -> str:
    """The code the app shows now, or the next one when this one was used already (a code
    works once; signing in twice within 30 seconds takes the next, which is still accepted)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    now = time.time()
    totp.time = now
    if totp.t() <= device.last_t:
        totp.time = now + (device.last_t + 1 - totp.t()) * device.step
    return f"{totp.token():0{device.digits}d}"


def code_from_key(key: str) -> str:
    """The app's code for a key typed by hand from the set-up page ("ABCD EFGH …")."""
    secret = key.replace(" ", "")
    return f"{TOTP(b32decode(secret + '=' * (-len(secret) % 8))).token():06d}"


def enrol(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


def sign_in(client, user, password: str = PASSWORD, *, next_url: str = "", **extra):
    """Both steps through the forms; sets up an app on the way when the person has none.
    Returns the last response (the redirect into the application)."""
    data = {"username": user.get_username(), "password": password}
    if next_url:
        data["next"] = next_url
    response = client.post(LOGIN, data, **extra)
    if response.status_code != 302:
        return response
    if response["Location"] == SET_UP_STEP:
        page = client.get(SET_UP_STEP).content.decode()
        key = re.search(r"<code data-setup-key>([A-Z2-7 ]+)</code>", page).group(1)
        response = client.post(SET_UP_STEP, {"otp_token": code_from_key(key)}, **extra)
        client.get(response["Location"])  # the recovery codes, shown once
    elif response["Location"] == CODE_STEP:
        device = TOTPDevice.objects.get(user=user, confirmed=True)
        response = client.post(CODE_STEP, {"otp_token": app_code(device)}, **extra)
    return response
