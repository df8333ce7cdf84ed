"""Integration clients' credentials: an API token and a signing secret, stored only as hashes.

The signing secret is 96 URL-safe characters, longer than SHA-256's 64-byte block, so
HMAC-SHA256 keys with SHA-256(secret) (RFC 2104, section 2): the 32-byte hash the database
keeps verifies exactly the signatures the client computes with the secret it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

TOKEN_PREFIX_LENGTH = 8
SIGNATURE_MAX_SKEW_S = 300
SIGNATURE_HEADER = "X-ClinicDesk-Signature"
TIMESTAMP_HEADER = "X-ClinicDesk-Timestamp"


@dataclass(frozen=True)
class IssuedCredentials:
    token: str
    signing_secret: str
    token_prefix: str
    token_hash: str
    signing_key: bytes


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_credentials() -> IssuedCredentials:
    token = "cdk_" + secrets.token_urlsafe(32)
    signing_secret = "cds_" + secrets.token_urlsafe(69)  # 96 characters > the 64-byte block
    return IssuedCredentials(
        token=token,
        signing_secret=signing_secret,
        token_prefix=token[:TOKEN_PREFIX_LENGTH],
        token_hash=token_hash(token),
        signing_key=hashlib.sha256(signing_secret.encode()).digest(),
    )


def sign(key: bytes | str, timestamp: int | str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`, as a client computes it."""
    if isinstance(key, str):
        key = key.encode()
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class SignatureError(Exception):
    """Why a signed request was refused; the message is safe to return to the sender."""


def verify_signature(
    *, signing_key: bytes, timestamp: str | None, signature: str | None, body: bytes, now=None
) -> None:
    if not timestamp:
        raise SignatureError(f"Missing {TIMESTAMP_HEADER}: send the Unix time in seconds.")
    if not signature:
        raise SignatureError(
            f'Missing {SIGNATURE_HEADER}: send "sha256=" and the hex HMAC-SHA256 of '
            '"<timestamp>.<raw body>" with your signing secret.'
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be whole Unix seconds.") from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > SIGNATURE_MAX_SKEW_S:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is more than {SIGNATURE_MAX_SKEW_S // 60} minutes off the "
            "server's clock: sign each request when you send it."
        )
    expected = sign(bytes(signing_key), timestamp, body)
    if not hmac.compare_digest(expected, signature.strip()):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body and timestamp.")
