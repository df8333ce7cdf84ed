"""The demo clinic: a family practice of about twelve providers and the staff who run its
administrative work. Plain data first (reused by later code, such as traffic generators),
then the functions that build it, idempotently.

A demo user is recognised by its e-mail domain; a login of the same name that is not a demo
user is left alone (never a password reset, never a group change).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill
from accounts.services import department_create, staff_set_availability, staff_set_departments
from clinicdesk.roles import AGENT, COMPLIANCE, MANAGER, ROLES, SUPERVISOR
from queues.models import IntakeField, Priority, Queue, TaskType
from queues.services import queue_sync_permissions

User = get_user_model()

DEMO_EMAIL_DOMAIN = "demo.clinicdesk.example"
MON_FRI = [0, 1, 2, 3, 4]
DAY = {"shift_start": time(8, 0), "shift_end": time(17, 0), "shift_weekdays": MON_FRI}
ON_CALL = {"shift_start": time(16, 0), "shift_end": time(8, 0), "shift_weekdays": []}

SITES = [
    {
        "code": "riverside",
        "name": "Riverside Family Practice",
        "time_zone": "America/New_York",
        "address": "410 River Road, Suite 200, Riverside",
        "opens_at": time(8, 0),
        "closes_at": time(17, 0),
        "open_weekdays": MON_FRI,
    },
    {
        "code": "northgate",
        "name": "Northgate Clinic",
        "time_zone": "America/New_York",
        "address": "17 Northgate Plaza, Riverside",
        "opens_at": time(7, 30),
        "closes_at": time(16, 0),
        "open_weekdays": MON_FRI,
    },
]

DEPARTMENTS = [
    {
        "code": "front-desk",
        "name": "Front desk",
        "site": "riverside",
        "description": "Check-in, registration, insurance cards, portal help and phone calls.",
    },
    {
        "code": "billing",
        "name": "Billing",
        "site": "riverside",
        "description": "Patient statements, claim denials, appeals and payment plans.",
    },
    {
        "code": "prior-auth",
        "name": "Prior authorization",
        "site": "riverside",
        "description": "Authorization requests to payers and their answers.",
    },
    {
        "code": "referrals",
        "name": "Referral intake",
        "site": "riverside",
        "description": "Incoming referral packets: completeness, eligibility, routing.",
    },
    {
        "code": "triage",
        "name": "Clinical triage",
        "site": "riverside",
        "description": "Registered nurses: symptoms, red flags and abnormal results.",
    },
    {
        "code": "scheduling",
        "name": "Scheduling",
        "site": "riverside",
        "description": "Appointments, reschedules and referral scheduling.",
    },
    {
        "code": "records",
        "name": "Medical records",
        "site": "riverside",
        "description": "Release of information and records requests.",
    },
]

P = Queue.Policy
QUEUES = [
    {
        "code": "front-desk",
        "name": "Front desk",
        "department": "front-desk",
        "assignment_policy": P.PUSH_LEAST_LOADED,
    },
    {"code": "billing", "name": "Billing", "department": "billing"},
    {"code": "prior-auth", "name": "Prior authorization", "department": "prior-auth"},
    {"code": "referrals", "name": "Referral intake", "department": "referrals"},
    {"code": "triage", "name": "Clinical triage", "department": "triage"},
    {
        "code": "scheduling",
        "name": "Scheduling",
        "department": "scheduling",
        "assignment_policy": P.PUSH_ROUND_ROBIN,
    },
    {
        "code": "records",
        "name": "Medical records",
        "department": "records",
        "assignment_policy": P.PULL_ONLY,
    },
    {
        "code": "needs-review",
        "name": "Needs review",
        "department": "front-desk",
        "kind": Queue.Kind.REVIEW,
        "assignment_policy": P.PULL_ONLY,
        "description": "Requests the classifier was unsure of: choose a type and route them.",
    },
    {
        "code": "holding",
        "name": "Holding",
        "department": "front-desk",
        "kind": Queue.Kind.HOLDING,
        "assignment_policy": P.PULL_ONLY,
        "description": "Waiting on someone outside the clinic.",
    },
]

SKILLS = [
    {"code": "payer-appeals", "name": "Payer appeals"},
    {"code": "insurance-verification", "name": "Insurance verification"},
    {"code": "prior-auth-commercial", "name": "Prior authorization (commercial)"},
    {"code": "prior-auth-medicare", "name": "Prior authorization (Medicare)"},
    {"code": "referral-coordination", "name": "Referral coordination"},
    {"code": "clinical-triage-rn", "name": "Clinical triage (RN)"},
    {"code": "scheduling", "name": "Scheduling"},
    {"code": "records-release", "name": "Records release"},
    {"code": "spanish", "name": "Spanish"},
]

F = IntakeField
TASK_TYPES = [
    {
        "code": "referral_packet",
        "name": "Referral packet",
        "department": "referrals",
        "default_queue": "referrals",
        "default_priority": Priority.P3,
        "capacity_weight": 2,
        "required_fields": [
            F.PATIENT_NAME,
            F.PATIENT_BIRTH_DATE,
            F.REFERRING_PROVIDER,
            F.PAYER,
        ],
        "description": "A referral from an outside provider, usually by fax.",
    },
    {
        "code": "eligibility_verification",
        "name": "Eligibility verification",
        "department": "front-desk",
        "default_queue": "front-desk",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_MRN, F.PAYER],
        "description": "Confirm active coverage and benefits before a visit.",
    },
    {
        "code": "prior_auth_request",
        "name": "Prior authorization request",
        "department": "prior-auth",
        "default_queue": "prior-auth",
        "default_priority": Priority.P2,
        "capacity_weight": 2,
        "required_fields": [F.PATIENT_MRN, F.PAYER, F.REFERRING_PROVIDER],
        "description": "Submit a procedure, imaging or drug authorization to the payer.",
    },
    {
        "code": "prior_auth_update",
        "name": "Prior authorization update",
        "department": "prior-auth",
        "default_queue": "prior-auth",
        "default_priority": Priority.P2,
        "required_fields": [F.PATIENT_MRN, F.PAYER],
        "description": "A payer's approval, denial or request for more information.",
    },
    {
        "code": "billing_question",
        "name": "Billing question",
        "department": "billing",
        "default_queue": "billing",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_MRN, F.CALLBACK_NUMBER],
        "description": "A patient asks about a statement or a charge.",
    },
    {
        "code": "claim_denial",
        "name": "Claim denial",
        "department": "billing",
        "default_queue": "billing",
        "default_priority": Priority.P2,
        "capacity_weight": 2,
        "required_fields": [F.PATIENT_MRN, F.PAYER],
        "description": "A denied claim to correct and resubmit or appeal.",
    },
    {
        "code": "payment_plan",
        "name": "Payment plan request",
        "department": "billing",
        "default_queue": "billing",
        "default_priority": Priority.P4,
        "required_fields": [F.PATIENT_MRN, F.CALLBACK_NUMBER],
    },
    {
        "code": "registration_admission",
        "name": "New patient registration",
        "department": "front-desk",
        "default_queue": "front-desk",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_NAME, F.PATIENT_BIRTH_DATE, F.CALLBACK_NUMBER],
    },
    {
        "code": "lab_result_followup",
        "name": "Lab result follow-up",
        "department": "triage",
        "default_queue": "triage",
        "default_priority": Priority.P2,
        "capacity_weight": 2,
        "required_fields": [F.PATIENT_MRN],
        "description": "An abnormal or critical result that a nurse must act on.",
    },
    {
        "code": "clinical_triage",
        "name": "Clinical triage (red flag)",
        "department": "triage",
        "default_queue": "triage",
        "default_priority": Priority.P1,
        "capacity_weight": 2,
        "required_fields": [F.PATIENT_MRN, F.CALLBACK_NUMBER],
        "description": "Symptoms in a message or voicemail that need a nurse now.",
    },
    {
        "code": "appointment_request",
        "name": "Appointment request",
        "department": "scheduling",
        "default_queue": "scheduling",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_MRN, F.CALLBACK_NUMBER],
    },
    {
        "code": "callback_request",
        "name": "Callback request",
        "department": "front-desk",
        "default_queue": "front-desk",
        "default_priority": Priority.P3,
        "required_fields": [F.CALLBACK_NUMBER],
        "description": "A voicemail or message asking the clinic to call back.",
    },
    {
        "code": "portal_access",
        "name": "Patient portal access",
        "department": "front-desk",
        "default_queue": "front-desk",
        "default_priority": Priority.P4,
        "required_fields": [F.PATIENT_MRN],
    },
    {
        "code": "records_request",
        "name": "Medical records request",
        "department": "records",
        "default_queue": "records",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_NAME, F.PATIENT_BIRTH_DATE],
        "description": "Release of information to a patient, attorney or other provider.",
    },
    {
        "code": "scheduling_readiness",
        "name": "Scheduling readiness",
        "department": "scheduling",
        "default_queue": "scheduling",
        "default_priority": Priority.P3,
        "required_fields": [F.PATIENT_MRN, F.REFERRING_PROVIDER],
        "description": "A referral that is complete and authorized: book the visit.",
    },
    {
        "code": "general_inquiry",
        "name": "General inquiry",
        "department": "front-desk",
        "default_queue": "front-desk",
        "default_priority": Priority.P4,
        "required_fields": [],
    },
]

A = StaffProfile.Availability
STAFF = [
    # The named logins of the README come first.
    {
        "username": "frontdesk1",
        "first_name": "Maria",
        "last_name": "Alvarez",
        "roles": [AGENT],
        "departments": ["front-desk"],
        "skills": {"insurance-verification": 4, "spanish": 5, "scheduling": 3},
        "capacity": 6,
    },
    {
        "username": "billing1",
        "first_name": "James",
        "last_name": "Whitaker",
        "roles": [AGENT],
        "departments": ["billing"],
        "skills": {"payer-appeals": 4, "insurance-verification": 3},
        "capacity": 5,
    },
    {
        "username": "auth1",
        "first_name": "Priya",
        "last_name": "Natarajan",
        "roles": [AGENT],
        "departments": ["prior-auth"],
        "skills": {"prior-auth-commercial": 5, "prior-auth-medicare": 4},
        "capacity": 5,
    },
    {
        "username": "intake1",
        "first_name": "Daniel",
        "last_name": "Okafor",
        "roles": [AGENT],
        "departments": ["referrals"],
        "skills": {"referral-coordination": 4, "insurance-verification": 3},
        "capacity": 6,
    },
    {
        "username": "nurse1",
        "first_name": "Grace",
        "last_name": "Kim",
        "roles": [AGENT],
        "departments": ["triage"],
        "skills": {"clinical-triage-rn": 5},
        "capacity": 4,
    },
    {
        "username": "scheduler1",
        "first_name": "Tyler",
        "last_name": "Brooks",
        "roles": [AGENT],
        "departments": ["scheduling"],
        "skills": {"scheduling": 4, "spanish": 2},
        "capacity": 8,
    },
    {
        "username": "supervisor1",
        "first_name": "Angela",
        "last_name": "Foster",
        "roles": [SUPERVISOR],
        "departments": ["front-desk", "billing", "scheduling"],
        "skills": {"insurance-verification": 4, "payer-appeals": 3, "scheduling": 4},
        "capacity": 3,
    },
    {
        "username": "manager1",
        "first_name": "Robert",
        "last_name": "Chen",
        "roles": [MANAGER],
        "is_staff": True,  # the admin is the managers' page
        "departments": [],
        "skills": {},
        "capacity": 3,
        "availability": A.OFFLINE,
    },
    {
        "username": "compliance1",
        "first_name": "Linda",
        "last_name": "Morales",
        "roles": [COMPLIANCE],
        "departments": [],
        "skills": {},
        "capacity": 3,
        "availability": A.OFFLINE,
    },
    # The rest of the team.
    {
        "username": "frontdesk2",
        "first_name": "Kevin",
        "last_name": "Nguyen",
        "roles": [AGENT],
        "departments": ["front-desk"],
        "skills": {"insurance-verification": 3, "scheduling": 2},
        "capacity": 5,
    },
    {
        "username": "frontdesk3",
        "first_name": "Aisha",
        "last_name": "Patel",
        "roles": [AGENT],
        "departments": ["front-desk"],
        "skills": {"spanish": 4, "insurance-verification": 2},
        "capacity": 5,
        "availability": A.AWAY,
        "sites": ["riverside", "northgate"],
    },
    {
        "username": "billing2",
        "first_name": "Carlos",
        "last_name": "Ramirez",
        "roles": [AGENT],
        "departments": ["billing"],
        "skills": {"payer-appeals": 3, "spanish": 5},
        "capacity": 6,
    },
    {
        "username": "billing3",
        "first_name": "Hannah",
        "last_name": "Schultz",
        "roles": [AGENT],
        "departments": ["billing"],
        "skills": {"payer-appeals": 5},
        "capacity": 4,
        "availability": A.OFFLINE,
    },
    {
        "username": "auth2",
        "first_name": "Marcus",
        "last_name": "Johnson",
        "roles": [AGENT],
        "departments": ["prior-auth"],
        "skills": {"prior-auth-commercial": 3, "prior-auth-medicare": 2},
        "capacity": 5,
    },
    {
        "username": "intake2",
        "first_name": "Sofia",
        "last_name": "Rossi",
        "roles": [AGENT],
        "departments": ["referrals"],
        "skills": {"referral-coordination": 3, "spanish": 4},
        "capacity": 6,
    },
    {
        "username": "nurse2",
        "first_name": "Emily",
        "last_name": "Carter",
        "roles": [AGENT],
        "departments": ["triage"],
        "skills": {"clinical-triage-rn": 4},
        "capacity": 4,
    },
    {
        "username": "nurse3",
        "first_name": "David",
        "last_name": "Levine",
        "roles": [AGENT],
        "departments": ["triage"],
        "skills": {"clinical-triage-rn": 4, "spanish": 3},
        "capacity": 4,
        "shift": ON_CALL,  # evenings, nights and weekends
    },
    {
        "username": "scheduler2",
        "first_name": "Jasmine",
        "last_name": "Lee",
        "roles": [AGENT],
        "departments": ["scheduling"],
        "skills": {"scheduling": 3, "spanish": 3},
        "capacity": 7,
        "sites": ["riverside", "northgate"],
    },
    {
        "username": "records1",
        "first_name": "Olivia",
        "last_name": "Bennett",
        "roles": [AGENT],
        "departments": ["records"],
        "skills": {"records-release": 4},
        "capacity": 8,
    },
    {
        "username": "records2",
        "first_name": "Samuel",
        "last_name": "Wright",
        "roles": [AGENT],
        "departments": ["records"],
        "skills": {"records-release": 3},
        "capacity": 6,
        "availability": A.AWAY,
    },
    {
        "username": "supervisor2",
        "first_name": "Patricia",
        "last_name": "Gomez",
        "roles": [SUPERVISOR],
        "departments": ["triage", "referrals", "prior-auth"],
        "skills": {"clinical-triage-rn": 5, "referral-coordination": 4},
        "capacity": 3,
    },
]

# The logins the command prints and the README lists.
LOGINS = [
    "frontdesk1",
    "billing1",
    "auth1",
    "intake1",
    "nurse1",
    "scheduler1",
    "supervisor1",
    "manager1",
    "compliance1",
]


@dataclass
class DemoResult:
    created: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    skipped_users: list[str] = field(default_factory=list)


def _upsert(model: type[models.Model], lookup: dict, values: dict, result: DemoResult):
    """get_or_create, then save only the fields that differ: a re-run writes nothing (and
    so leaves no audit entries)."""
    obj, created = model.objects.get_or_create(**lookup, defaults=values)
    name = str(model._meta.verbose_name_plural)
    if created:
        result.created[name] += 1
        return obj
    changed = [key for key, value in values.items() if not _same(obj, key, value)]
    if changed:
        for key in changed:
            setattr(obj, key, values[key])
        obj.save(update_fields=changed)
        result.updated[name] += 1
    return obj


def build_sites(result: DemoResult) -> dict[str, Site]:
    return {
        spec["code"]: _upsert(Site, {"code": spec["code"]}, _without(spec, "code"), result)
        for spec in SITES
    }


def build_departments(sites: dict[str, Site], result: DemoResult) -> dict[str, Department]:
    departments = {}
    for spec in DEPARTMENTS:
        values = {
            "site": sites[spec["site"]],
            "name": spec["name"],
            "description": spec["description"],
        }
        department = Department.objects.filter(code=spec["code"]).first()
        if department is None:
            department = department_create(code=spec["code"], **values)
            result.created[str(Department._meta.verbose_name_plural)] += 1
        else:
            department = _upsert(Department, {"code": spec["code"]}, values, result)
        departments[spec["code"]] = department
    return departments


def build_queues(departments: dict[str, Department], result: DemoResult) -> dict[str, Queue]:
    queues = {}
    for spec in QUEUES:
        values = {
            "department": departments[spec["department"]],
            "name": spec["name"],
            "kind": spec.get("kind", Queue.Kind.WORK),
            "assignment_policy": spec.get("assignment_policy", P.PUSH_LEAST_LOADED),
            "description": spec.get("description", ""),
            "is_active": True,
        }
        queue = Queue.objects.filter(code=spec["code"]).first()
        previous_department_id = queue.department_id if queue else None
        queue = _upsert(Queue, {"code": spec["code"]}, values, result)
        # assign_perm is a get_or_create: a re-run adds nothing.
        queue_sync_permissions(queue=queue, previous_department_id=previous_department_id)
        queues[spec["code"]] = queue
    return queues


def build_skills(result: DemoResult) -> dict[str, Skill]:
    return {
        spec["code"]: _upsert(Skill, {"code": spec["code"]}, _without(spec, "code"), result)
        for spec in SKILLS
    }


def build_task_types(
    departments: dict[str, Department], queues: dict[str, Queue], result: DemoResult
) -> dict[str, TaskType]:
    task_types = {}
    for spec in TASK_TYPES:
        values = {
            "name": spec["name"],
            "department": departments[spec["department"]],
            "default_queue": queues[spec["default_queue"]],
            "default_priority": spec["default_priority"],
            "capacity_weight": spec.get("capacity_weight", 1),
            "required_fields": list(spec["required_fields"]),
            "description": spec.get("description", ""),
            "is_active": True,
        }
        task_types[spec["code"]] = _upsert(TaskType, {"code": spec["code"]}, values, result)
    return task_types


def build_staff(
    sites: dict[str, Site],
    departments: dict[str, Department],
    skills: dict[str, Skill],
    result: DemoResult,
) -> dict[str, StaffProfile]:
    role_groups = {group.name: group for group in Group.objects.filter(name__in=ROLES)}
    if missing := sorted(set(ROLES) - set(role_groups)):
        raise LookupError(
            f"The role groups {', '.join(missing)} do not exist: run `manage.py migrate` first."
        )
    profiles = {}
    for spec in STAFF:
        user = _demo_user(spec, result)
        if user is None:
            continue
        wanted_roles = {role_groups[name] for name in spec["roles"]}
        current_roles = set(user.groups.filter(name__in=ROLES))
        if current_roles - wanted_roles:
            user.groups.remove(*(current_roles - wanted_roles))
        if wanted_roles - current_roles:
            user.groups.add(*(wanted_roles - current_roles))

        shift = spec.get("shift", DAY)
        values = {
            "capacity": spec["capacity"],
            "time_zone": "America/New_York",
            "shift_start": shift["shift_start"],
            "shift_end": shift["shift_end"],
            "shift_weekdays": list(shift["shift_weekdays"]),
        }
        profile = _upsert(StaffProfile, {"user": user}, values, result)
        availability = spec.get("availability", A.AVAILABLE)
        if profile.availability != availability:
            staff_set_availability(profile=profile, availability=availability)
        profile.sites.set([sites[code] for code in spec.get("sites", ["riverside"])])
        staff_set_departments(
            profile=profile, departments=[departments[code] for code in spec["departments"]]
        )
        _set_skills(profile, {skills[code]: level for code, level in spec["skills"].items()})
        profiles[spec["username"]] = profile
    return profiles


@transaction.atomic
def build_demo_clinic() -> DemoResult:
    result = DemoResult()
    sites = build_sites(result)
    departments = build_departments(sites, result)
    queues = build_queues(departments, result)
    skills = build_skills(result)
    build_task_types(departments, queues, result)
    build_staff(sites, departments, skills, result)
    return result


def demo_counts() -> dict[str, int]:
    """How much of the demo clinic exists: the summary the command prints."""
    return {
        "sites": Site.objects.filter(code__in=[s["code"] for s in SITES]).count(),
        "departments": Department.objects.filter(code__in=[d["code"] for d in DEPARTMENTS]).count(),
        "queues": Queue.objects.filter(code__in=[q["code"] for q in QUEUES]).count(),
        "skills": Skill.objects.filter(code__in=[s["code"] for s in SKILLS]).count(),
        "task types": TaskType.objects.filter(code__in=[t["code"] for t in TASK_TYPES]).count(),
        "staff": StaffProfile.objects.filter(user__email__endswith=f"@{DEMO_EMAIL_DOMAIN}").count(),
    }


def is_demo_user(user) -> bool:
    return user.email.lower().endswith(f"@{DEMO_EMAIL_DOMAIN}")


def _demo_user(spec: dict, result: DemoResult):
    values = {
        "first_name": spec["first_name"],
        "last_name": spec["last_name"],
        "email": f"{spec['username']}@{DEMO_EMAIL_DOMAIN}",
        "is_staff": spec.get("is_staff", False),
        "is_superuser": False,
        "is_active": True,
    }
    user = User.objects.filter(username=spec["username"]).first()
    if user is None:
        user = User(username=spec["username"], **values)
        user.set_password(settings.DEMO_PASSWORD)
        user.save()
        result.created["users"] += 1
        return user
    if not is_demo_user(user):
        result.skipped_users.append(user.username)
        return None
    changed = [key for key, value in values.items() if getattr(user, key) != value]
    # The logins table promises the demo password; restore it if someone changed it.
    if not user.check_password(settings.DEMO_PASSWORD):
        user.set_password(settings.DEMO_PASSWORD)
        changed.append("password")
    if changed:
        for key in set(changed) - {"password"}:
            setattr(user, key, values[key])
        user.save(update_fields=changed)
        result.updated["users"] += 1
    return user


def _set_skills(profile: StaffProfile, wanted: dict[Skill, int]) -> None:
    current = {held.skill_id: held for held in profile.skills.all()}
    for skill, level in wanted.items():
        held = current.pop(skill.pk, None)
        if held is None:
            StaffSkill.objects.create(staff=profile, skill=skill, level=level)
        elif held.level != level:
            held.level = level
            held.save(update_fields=["level"])
    for held in current.values():
        held.delete()


def _same(obj: models.Model, key: str, value) -> bool:
    field = obj._meta.get_field(key)
    if field.is_relation:  # compare ids: no query for the related row
        return getattr(obj, field.attname) == value.pk
    return getattr(obj, key) == value


def _without(spec: dict, *keys: str) -> dict:
    return {key: value for key, value in spec.items() if key not in keys}
