"""Second factor: an authenticator app (TOTP, django-otp) and ten single-use recovery codes.

Who must use one is a fact of the person (`two_factor_required`): a role listed in
TWO_FACTOR_REQUIRED_ROLES, or access to the admin. Anyone else may choose to. Recovery codes
are django-otp static tokens, each deleted as it is used.
"""

from __future__ import annotations

import secrets
from base64 import b32encode
from dataclasses import dataclass

import segno
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

RECOVERY_CODE_COUNT = 10
# Lower-case letters and digits without the look-alikes (0/o, 1/l/i): read off paper, typed.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_CODE_LENGTH = 10  # about 49 bits each
APP_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"


@dataclass(frozen=True)
class Verified:
    """A code that was accepted: the device that accepted it, and whether it was a recovery
    code (and so how many are left)."""

    device: TOTPDevice | StaticDevice
    recovery: bool = False
    recovery_left: int = 0


def two_factor_required(user) -> bool:
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name__in=settings.TWO_FACTOR_REQUIRED_ROLES).exists()


def app_device(user) -> TOTPDevice | None:
    """The person's confirmed authenticator app, if they have set one up."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def recovery_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def app_device_start(*, user) -> TOTPDevice:
    """The unconfirmed device being set up, with a new key unless one is already on screen.

    Reloading the set-up page keeps the key that the person may already have scanned.
    """
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=APP_DEVICE_NAME, confirmed=False)
    return device


def app_device_confirm(*, device: TOTPDevice, code: str) -> bool:
    """Turn the set-up device on when the person proves it works with a code from it."""
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        if device.confirmed or not device.verify_token(normalise_code(code)):
            return False
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        # One app per person: a device set up earlier is replaced by this one.
        TOTPDevice.objects.filter(user=device.user_id).exclude(pk=device.pk).delete()
    return True


def recovery_codes_generate(*, user) -> list[str]:
    """Replace the person's recovery codes by ten new ones and return them, to show once."""
    codes = [
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        for _ in range(RECOVERY_CODE_COUNT)
    ]
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(
            user=user, name=RECOVERY_DEVICE_NAME, defaults={"confirmed": True}
        )
        StaticDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.token_set.all().delete()
        StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    return codes


def two_factor_verify(*, user, code: str) -> Verified | None:
    """The device that accepts this code: six digits are an app code, anything else a
    recovery code (used up by this). None when no device accepts it."""
    code = normalise_code(code)
    with transaction.atomic():
        if code.isdigit() and len(code) == 6:
            device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True)
            device = device.order_by("pk").first()
            if device is not None and device.verify_token(code):
                return Verified(device=device)
            return None
        device = StaticDevice.objects.select_for_update().filter(user=user, confirmed=True)
        device = device.order_by("pk").first()
        if device is not None and device.verify_token(code):
            return Verified(device=device, recovery=True, recovery_left=device.token_set.count())
    return None


def two_factor_wait_seconds(user) -> int:
    """Seconds before another code may be tried: django-otp doubles the pause after each
    wrong code (1, 2, 4 … seconds), per device, whatever the address."""
    waits = [0]
    # The app being set up counts too: its set-up page takes codes as well.
    devices = [*TOTPDevice.objects.filter(user=user), *StaticDevice.objects.filter(user=user)]
    for device in devices:
        allowed, data = device.verify_is_allowed()
        if not allowed and data and data.get("locked_until"):
            waits.append(int((data["locked_until"] - timezone.now()).total_seconds()) + 1)
    return max(waits)


def two_factor_remove(*, user) -> int:
    """Delete every device of the person (app and recovery codes); returns how many."""
    with transaction.atomic():
        removed, _ = TOTPDevice.objects.filter(user=user).delete()
        static, _ = StaticDevice.objects.filter(user=user).delete()
    return removed + static


def normalise_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def key_base32(device: TOTPDevice) -> str:
    """The key as an authenticator app asks for it when typed by hand, in groups of four."""
    key = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


def qr_svg(device: TOTPDevice) -> str:
    """The set-up link as an inline SVG QR code (no image request, no script)."""
    qr = segno.make(device.config_url, error="m")
    return qr.svg_inline(scale=4, dark="#1d2939", light="#ffffff", omitsize=False)
