"""How the OpenAPI schema (drf-spectacular) describes our authentication.

Imported by `queues.api.views`, so the extension is registered before the schema is built.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ClientTokenScheme(OpenApiAuthenticationExtension):
    target_class = "queues.api.authentication.ClientTokenAuthentication"
    name = "clientToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An integration client's token, sent as `Token <token>` "
            "(`python manage.py create_integration_client` prints it once).",
        }
