"""The OpenAPI 3 schema and its documentation pages, under /api/ (drf-spectacular)."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

app_name = "api_docs"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script from its own URL instead of inline, as
    # the Content-Security-Policy requires (the template drops the inline <style> too).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api_docs:schema"), name="swagger"),
    # Redoc needs a wider policy, on this one page of static documentation (no clinic data):
    # its styled-components write <style> elements with no nonce, its search runs in a worker
    # made from a blob, and its footer shows Redocly's logo from their CDN. Scripts stay 'self'.
    path(
        "docs/redoc/",
        csp_update(
            {
                "style-src": [UNSAFE_INLINE],
                "worker-src": [SELF, "blob:"],
                "img-src": ["https://cdn.redoc.ly"],
            }
        )(SpectacularRedocView.as_view(url_name="api_docs:schema")),
        name="redoc",
    ),
]
