"""A small clinic for the dedup and workflow tests: billing, referral intake, front desk, prior
authorization and scheduling, each with one person, and rules that classify billing questions
and referrals by their words."""

from __future__ import annotations

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.intake.draft import TaskDraft
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing.intake import IntakeResult, intake_submit
from routing.tests.factories import ClassificationRuleFactory, RuleSetFactory

TEAMS = [
    # (department code, person, task type code, task type name)
    ("billing", "bea", "billing_question", "Billing question"),
    ("referrals", "rita", "referral_packet", "Referral packet"),
    ("front-desk", "fred", "eligibility_verification", "Eligibility verification"),
    ("prior-auth", "paula", "prior_auth_request", "Prior authorization request"),
    ("scheduling", "sid", "scheduling_readiness", "Scheduling readiness"),
]


def build_intake_clinic() -> dict:
    clinic: dict = {"rules": RuleSetFactory()}
    for code, username, type_code, type_name in TEAMS:
        department = DepartmentFactory(name=type_name.split()[0].title(), code=code)
        queue = QueueFactory(department=department, name=f"{type_name} queue", code=code)
        clinic[f"{code}_queue"] = queue
        clinic[type_code] = TaskTypeFactory(code=type_code, name=type_name, default_queue=queue)
        clinic[username] = StaffProfileFactory(
            user=UserFactory(username=username, first_name=username.title(), last_name="Agent"),
            departments=[department],
            capacity=5,
        ).user
    ClassificationRuleFactory(
        rule_set=clinic["rules"],
        name="Bills",
        phrases="bill\nstatement\ncharge",
        set_task_type=clinic["billing_question"],
    )
    ClassificationRuleFactory(
        rule_set=clinic["rules"],
        name="Referrals",
        phrases="referral\nreferred",
        set_task_type=clinic["referral_packet"],
    )
    return clinic


def draft(subject: str, body: str = "", **fields) -> TaskDraft:
    fields.setdefault("channel", "portal")
    fields.setdefault("patient_mrn", "MRN-1001")
    fields.setdefault("patient_name", "Jordan Rivera")
    return TaskDraft(subject=subject, body=body, **fields)


def submit(subject: str, body: str = "", actor: str = "client:test", **fields) -> IntakeResult:
    return intake_submit(draft=draft(subject, body, **fields), actor=actor)
