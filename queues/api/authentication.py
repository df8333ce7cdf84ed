"""How the API knows who calls: integration clients by token, staff by their session.

`Authorization: Token <token>` names an integration client; the request then reads as the
client's service user (its department groups decide what it sees) with `request.auth` the
client. Webhooks (FHIR, email) are also signed; `require_signature` checks that.
"""

from __future__ import annotations

import logging

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from queues.intake import credentials, store
from queues.models import IntegrationClient

security_log = logging.getLogger("clinicdesk.security")


class ClientTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the header as 'Authorization: Token <token>', with no spaces in the token."
            )
        try:
            token = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The token holds characters it cannot.") from None
        client = store.integration_client_for_token(token)
        if client is None:
            security_log.warning(
                "api token refused: prefix=%s addr=%s path=%s",
                token[: credentials.TOKEN_PREFIX_LENGTH],
                request.META.get("REMOTE_ADDR", ""),
                request.path,
            )
            raise exceptions.AuthenticationFailed("Unknown or revoked token.")
        return client.user, client

    def authenticate_header(self, request):
        return self.keyword


def calling_client(request) -> IntegrationClient | None:
    return request.auth if isinstance(request.auth, IntegrationClient) else None


def require_signature(request, client: IntegrationClient) -> None:
    """Refuse (401) a webhook whose signature or timestamp does not check out, and log it."""
    try:
        credentials.verify_signature(
            signing_key=bytes(client.signing_key),
            timestamp=request.headers.get(credentials.TIMESTAMP_HEADER),
            signature=request.headers.get(credentials.SIGNATURE_HEADER),
            body=request.body,
        )
    except credentials.SignatureError as error:
        security_log.warning(
            "webhook signature refused: client=%s addr=%s path=%s reason=%s",
            client.name,
            request.META.get("REMOTE_ADDR", ""),
            request.path,
            error,
        )
        raise exceptions.AuthenticationFailed(str(error)) from None
