"""Inbound webhooks, mounted at /api/v1/inbound/: signed pushes from other systems."""

from django.urls import path

from queues.api import inbound

app_name = "inbound"

urlpatterns = [
    path("fhir/", inbound.FhirInboundView.as_view(), name="fhir"),
    path("email/", inbound.EmailInboundView.as_view(), name="email"),
]
