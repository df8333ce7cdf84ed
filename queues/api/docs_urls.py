"""The OpenAPI 3 schema and its documentation pages, under /api/ (drf-spectacular)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

app_name = "api_docs"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api_docs:schema"), name="swagger"),
    path("docs/redoc/", SpectacularRedocView.as_view(url_name="api_docs:schema"), name="redoc"),
]
