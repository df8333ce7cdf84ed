"""The clinic of the intake page tests: a front desk, a prior-authorization team, and rules
that honour the type a person picks on the front-desk form (by request type)."""

from __future__ import annotations

import json
import uuid

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.intake import form as form_adapter
from queues.models import Channel, IntakeField, Queue
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing.tests.factories import ClassificationRuleFactory, RuleSetFactory

F = IntakeField


def person(username: str, departments=(), roles=("Agent",), **kwargs):
    return StaffProfileFactory(
        user=UserFactory(
            username=username, first_name=username.title(), last_name="Doe", roles=list(roles)
        ),
        departments=list(departments),
        **kwargs,
    ).user


def build_desk_clinic() -> dict:
    front = DepartmentFactory(name="Front desk", code="front-desk")
    auth = DepartmentFactory(name="Prior authorization", code="prior-auth")
    front_queue = QueueFactory(department=front, name="Front desk", code="front-desk")
    auth_queue = QueueFactory(department=auth, name="Prior authorization", code="prior-auth")
    review = QueueFactory(
        department=front,
        name="Needs review",
        code="needs-review",
        kind=Queue.Kind.REVIEW,
        assignment_policy=Queue.Policy.PULL_ONLY,
    )
    rules = RuleSetFactory(review_queue=review, red_flag_queue=front_queue)
    types = {
        "prior_auth_request": TaskTypeFactory(
            code="prior_auth_request",
            name="Prior authorization request",
            default_queue=auth_queue,
            default_priority=2,
            required_fields=[F.PATIENT_MRN, F.PAYER, F.REFERRING_PROVIDER],
            description="Submit a procedure, imaging or drug authorization to the payer.",
        ),
        "callback_request": TaskTypeFactory(
            code="callback_request",
            name="Callback request",
            default_queue=front_queue,
            required_fields=[F.CALLBACK_NUMBER],
        ),
        "general_inquiry": TaskTypeFactory(
            code="general_inquiry", name="General inquiry", default_queue=front_queue
        ),
    }
    for task_type in types.values():
        ClassificationRuleFactory(
            rule_set=rules,
            name=f"Front desk chose {task_type.name}",
            channels=[Channel.FORM, Channel.PHONE],
            request_types=[task_type.code],
            set_task_type=task_type,
            stop=True,
        )
    return {
        "front": front,
        "auth": auth,
        "front_queue": front_queue,
        "auth_queue": auth_queue,
        "review": review,
        "rules": rules,
        "types": types,
        "maria": person("maria", [front]),
        "paula": person("paula", [auth]),
        "sam": person("sam", [front], roles=["Supervisor"]),
        "bill": person("bill", [auth], roles=["Supervisor"]),
        "mo": person("mo", roles=["Manager"], availability="offline"),
        "carol": person("carol", roles=["Compliance"], availability="offline"),
    }


def form_payload(**fields) -> bytes:
    """A stored front-desk submission, as the page writes it; fields override the defaults."""
    data = {
        "version": 1,
        "channel": "form",
        "submission_id": str(uuid.uuid4()),
        "task_type": "",
        "subject": "Walk-in asks about a letter",
        "details": "",
        **{str(name): "" for name in form_adapter.MAX_LENGTHS},
        "patient_birth_date": "",
        "urgency": None,
        "entered_by": "maria",
        "site_id": None,
        **fields,
    }
    return json.dumps(data, indent=2).encode()
