"""A small clinic and a signed integration client for the FHIR, email and attachment tests."""

from __future__ import annotations

import time

from rest_framework.test import APIClient

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.intake import credentials, store
from queues.models import Queue
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing.tests.factories import ClassificationRuleFactory, RuleSetFactory


def person(department, username: str):
    return StaffProfileFactory(
        user=UserFactory(username=username, roles=["Agent"]), departments=[department]
    ).user


def build_intake_clinic() -> dict:
    """Front desk (referrals, and the Needs review queue) and Billing (claim denials), each
    with one agent; rules that classify by a FHIR category / request type and by phrase."""
    front_desk = DepartmentFactory(name="Front desk", code="front-desk")
    billing = DepartmentFactory(name="Billing", code="billing")
    front_queue = QueueFactory(department=front_desk, name="Front desk", code="front-desk")
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    review_queue = QueueFactory(
        department=front_desk,
        name="Needs review",
        code="needs-review",
        kind=Queue.Kind.REVIEW,
        assignment_policy=Queue.Policy.PULL_ONLY,
    )
    rules = RuleSetFactory(review_queue=review_queue, red_flag_queue=front_queue)
    referral = TaskTypeFactory(code="referral", name="Referral", default_queue=front_queue)
    denial = TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=billing_queue)
    ClassificationRuleFactory(
        rule_set=rules, name="EHR referrals", request_types=["referral"], set_task_type=referral
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Referral words", phrases="referral", set_task_type=referral
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Denied claims", phrases="claim denied\ndenial", set_task_type=denial
    )
    return {
        "front_desk": front_desk,
        "billing": billing,
        "front_queue": front_queue,
        "billing_queue": billing_queue,
        "review_queue": review_queue,
        "frank": person(front_desk, "frank"),
        "alice": person(billing, "alice"),
    }


def make_client(name: str = "ehr", channels=("fhir", "email"), departments=()):
    client, issued = store.integration_client_create(
        name=name, channels=list(channels), departments=departments
    )
    return client, issued


def signed_post(
    url: str,
    body: bytes,
    issued,
    *,
    content_type: str,
    timestamp: int | None = None,
    signature: str | None = None,
    headers: bool = True,
    api: APIClient | None = None,
):
    """POST `body` as the client would: its token, and the body signed at `timestamp`."""
    api = api or APIClient()
    ts = int(time.time()) if timestamp is None else timestamp
    extra = {"HTTP_AUTHORIZATION": f"Token {issued.token}"}
    if headers:
        extra["HTTP_X_CLINICDESK_TIMESTAMP"] = str(ts)
        extra["HTTP_X_CLINICDESK_SIGNATURE"] = signature or credentials.sign(
            issued.signing_key, ts, body
        )
    return api.post(url, data=body, content_type=content_type, **extra)
