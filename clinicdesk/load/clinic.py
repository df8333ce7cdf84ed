"""The clinic a load run works in: the demo clinic (clinicdesk/demo.py) with its own staff of
agents spread over the departments in proportion to the demo morning's demand, each available
and on shift all day; an integration client for intake; and the intake requests, taken from
the demo morning (clinicdesk/demo_traffic.py) and written as the intake API takes them.

Only ever built in the load run's own database: its staff share one known password.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import transaction
from faker import Faker

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill
from accounts.services import staff_set_departments
from clinicdesk import demo, demo_traffic
from clinicdesk.roles import AGENT
from queues.access import audit_actor
from queues.intake import store
from queues.models import Channel

LOAD_PASSWORD = "clinicdesk-load"
LOAD_EMAIL_DOMAIN = "load.clinicdesk.example"
LOAD_ACTOR = "system:load"
CLIENT_NAME = "load-intake"
CLIENT_CHANNELS = [Channel.PORTAL, Channel.PHONE, Channel.FHIR, Channel.API]
# Metadata keys the demo items carry for the demo's own bookkeeping, not an integration's.
_DEMO_ONLY_METADATA = {"demo"}


@dataclass(frozen=True)
class LoadClinic:
    usernames: list[str]  # the load staff, in the order Locust hands them out
    staffing: dict[str, int]  # department code -> people
    token: str  # the integration client's API token


def department_demand(sample: int = 500) -> Counter:
    """How many requests of a demo morning each department's queues receive."""
    department_of = {q["code"]: q["department"] for q in demo.QUEUES}
    items = demo_traffic.generate_morning(sample)
    return Counter(department_of[item.expected_queue] for item in items)


def staffing(total: int) -> dict[str, int]:
    """`total` people over the demo departments in proportion to their demand, at least one in
    each (when there are enough people), largest remainder first: the parts sum to `total`."""
    codes = [d["code"] for d in demo.DEPARTMENTS]
    if total < len(codes):
        return dict(zip(codes, [1] * total + [0] * (len(codes) - total), strict=True))
    demand = department_demand()
    parts = demo_traffic.split(total - len(codes), [demand[code] for code in codes])
    return {code: part + 1 for code, part in zip(codes, parts, strict=True)}


def _templates() -> dict[str, list[dict]]:
    """Per department, the demo's agents working there: the models for capacity and skills."""
    by_department: dict[str, list[dict]] = {}
    for spec in demo.STAFF:
        if AGENT in spec["roles"] and len(spec["departments"]) == 1:
            by_department.setdefault(spec["departments"][0], []).append(spec)
    return by_department


@transaction.atomic
def build_load_clinic(*, staff: int = 50, password: str = LOAD_PASSWORD) -> LoadClinic:
    """The demo clinic, `staff` load agents, the demo's own people offline (so that work goes
    only to people who act on it), and a fresh integration client. For an empty database."""
    with audit_actor(LOAD_ACTOR):
        demo.build_demo_clinic()
        StaffProfile.objects.update(availability=StaffProfile.Availability.OFFLINE)
        plan = staffing(staff)
        usernames = _build_staff(plan, password)
        _, issued = store.integration_client_create(
            name=CLIENT_NAME,
            channels=list(CLIENT_CHANNELS),
            description="The load run's portal, phone system, EHR and payer feeds.",
        )
    return LoadClinic(usernames=usernames, staffing=plan, token=issued.token)


def _build_staff(plan: dict[str, int], password: str) -> list[str]:
    User = get_user_model()
    encoded = make_password(password)  # one hash shared by all: ~0.2 s each by design
    agent = Group.objects.get(name=AGENT)
    departments = {d.code: d for d in Department.objects.filter(code__in=plan)}
    skills = {s.code: s for s in Skill.objects.all()}
    site = Site.objects.get(code=demo.SITES[0]["code"])
    templates = _templates()
    names = Faker("en_US")
    names.seed_instance(demo_traffic.DEFAULT_SEED)
    usernames = []
    for code, count in plan.items():
        for n in range(1, count + 1):
            template = templates[code][(n - 1) % len(templates[code])]
            username = f"{code}-{n:02d}"
            user = User.objects.create(
                username=username,
                first_name=names.first_name(),
                last_name=names.last_name(),
                email=f"{username}@{LOAD_EMAIL_DOMAIN}",
                password=encoded,
            )
            user.groups.add(agent)
            # No shift window and no weekdays: on shift at any hour of any day.
            profile = StaffProfile.objects.create(
                user=user,
                capacity=template["capacity"],
                availability=StaffProfile.Availability.AVAILABLE,
                time_zone="America/New_York",
            )
            profile.sites.set([site])
            staff_set_departments(profile=profile, departments=[departments[code]])
            StaffSkill.objects.bulk_create(
                StaffSkill(staff=profile, skill=skills[skill], level=level)
                for skill, level in template["skills"].items()
            )
            usernames.append(username)
    # Handed out in turn by Locust: interleave departments, so a short run with few users
    # still has every department at work.
    return sorted(usernames, key=lambda u: (int(u.rsplit("-", 1)[1]), u))


def intake_requests(n: int, *, run: str, seed: int = demo_traffic.DEFAULT_SEED) -> list[dict]:
    """`n` requests of a demo morning as `POST /api/v1/intake/` bodies, each with an external id
    unique to the run (`load-<run>-<i>`). Received now, as an integration forwards them."""
    return [_payload(item, f"load-{run}-{i}") for i, item in enumerate(_items(n, seed), 1)]


def _items(n: int, seed: int) -> list[demo_traffic.DemoItem]:
    return demo_traffic.generate_morning(n, seed=seed)


def _payload(item: demo_traffic.DemoItem, external_id: str) -> dict:
    metadata = {k: v for k, v in item.metadata.items() if k not in _DEMO_ONLY_METADATA}
    metadata["source_system"] = item.source_system
    patient = {"mrn": item.patient_mrn, "name": item.patient_name}
    if item.patient_birth_date:
        patient["birth_date"] = item.patient_birth_date.isoformat()
    payload = {
        "channel": item.channel,
        "external_id": external_id,
        "subject": item.subject,
        "body": item.body,
        "patient": patient,
        "request_type": item.request_type,
        "metadata": metadata,
    }
    if item.channel == Channel.PHONE:
        # The phone system sends the transcript in its voicemail section, not as a body.
        payload["voicemail"] = {
            "caller_number": metadata["callback_number"],
            "transcript": payload.pop("body"),
        }
    return payload
