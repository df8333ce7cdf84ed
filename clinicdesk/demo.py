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
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import F as DbF
from django.utils import timezone

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill
from accounts.services import department_create, staff_set_availability, staff_set_departments
from clinicdesk.roles import AGENT, COMPLIANCE, MANAGER, ROLES, SUPERVISOR
from queues.models import IntakeField, Priority, Queue, TaskType
from queues.services import queue_sync_permissions
from routing.models import (
    ClassificationRule,
    DedupPolicy,
    RoutingRule,
    RuleSet,
    WorkflowStep,
    WorkflowTemplate,
)

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
        "code": "lab-results",
        "name": "Lab results",
        "department": "triage",
        "assignment_policy": P.PULL_ONLY,
        "description": (
            "Normal results to release to the patient: nurses pull them with Next task "
            "between calls, so pushed work stays for red flags and abnormal results."
        ),
    },
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
        "description": (
            "A lab result for a nurse: act on an abnormal or critical one, release a normal one."
        ),
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
        "capacity": 8,
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
        "capacity": 8,
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


# --- The demo rule set ---------------------------------------------------------------------
#
# What the clinic receives, routed the way its staff would: red flags first (always, before
# any rule), then the structured feeds (lab results and payer updates from the EHR and the
# authorization portals), then free text from the most specific topic to the most generic.
# Topic rules "stop here", so a message that names several topics goes to the first one in
# this order ("my claim was denied, please call me back" is a claim denial, not a callback).
# A message that matches no topic goes to Needs review. Tag and priority rules come before the
# topic rules, so that a stop never cuts them off.

RULE_SET = {
    "version": 1,
    "name": "Riverside rules",
    "description": (
        "The demo clinic's rules: red flags to Clinical triage, structured lab and payer "
        "feeds by request type, then free text by topic (most specific first)."
    ),
    "review_queue": "needs-review",
    "red_flag_queue": "triage",
    "red_flag_task_type": "clinical_triage",
    "red_flag_phrases": [
        "chest pain",
        "chest pressure",
        "chest tightness",
        "shortness of breath",
        "short of breath",
        "trouble breathing",
        "difficulty breathing",
        "can't breathe",
        "cant breathe",
        "suicidal",
        "suicide",
        "want to die",
        "kill myself",
        "overdose",
        "overdosed",
        "stroke",
        "slurred speech",
        "face drooping",
        "severe bleeding",
        "bleeding heavily",
        "won't stop bleeding",
        "unresponsive",
        "anaphylaxis",
        "throat closing",
        "throat swelling",
        "seizure",
        "dolor de pecho",
        "no puedo respirar",
    ],
}

CLASSIFICATION_RULES = [
    # Tags and priorities: no task type, never stop.
    {
        "name": "Spanish-language message",
        "order": 10,
        "phrases": [
            "hola",
            "necesito",
            "cita",
            "por favor",
            "gracias",
            "buenos días",
            "buenas tardes",
            "quisiera",
            "llamar",
        ],
        "add_tags": ["spanish"],
        "notes": "Tagged so that routing asks for a Spanish speaker.",
    },
    {
        "name": "Medicare payer",
        "order": 20,
        "phrases": ["medicare", "medicare advantage"],
        "add_tags": ["medicare"],
    },
    {
        "name": "Appeal mentioned",
        "order": 30,
        "phrases": ["appeal", "appealing", "reconsideration", "apelar"],
        "add_tags": ["appeal"],
    },
    {
        "name": "Payer deadline near",
        "order": 40,
        "channels": ["fhir", "api"],
        "request_types": ["prior_auth_update"],
        "phrases": [
            "deadline",
            "expires",
            "expiring",
            "due by",
            "submit by",
            "respond by",
            "peer-to-peer",
            "urgent auth",
            "expedited",
        ],
        "min_priority": Priority.P2,
        "notes": "A payer update with a clock on it is at least P2.",
    },
    # Structured feeds: the request type says what it is.
    {
        "name": "Critical lab value",
        "order": 100,
        "channels": ["fhir"],
        "request_types": ["lab_result"],
        "phrases": ["critical", "critically", "panic value"],
        "set_task_type": "lab_result_followup",
        "set_priority": Priority.P1,
        "stop": True,
    },
    {
        "name": "Abnormal lab result",
        "order": 110,
        "channels": ["fhir"],
        "request_types": ["lab_result"],
        "phrases": ["abnormal", "high", "low", "elevated", "out of range", "positive"],
        "set_task_type": "lab_result_followup",
        "set_priority": Priority.P2,
        "stop": True,
    },
    {
        "name": "Normal lab result",
        "order": 120,
        "channels": ["fhir"],
        "request_types": ["lab_result"],
        "set_task_type": "lab_result_followup",
        "set_priority": Priority.P4,
        "stop": True,
        "notes": "Whatever the critical and abnormal rules left: a result to release.",
    },
    {
        "name": "Payer prior-authorization update",
        "order": 130,
        "channels": ["fhir", "api"],
        "request_types": ["prior_auth_update"],
        "set_task_type": "prior_auth_update",
        "set_priority": Priority.P3,
        "stop": True,
        "notes": "Routine (P3) unless 'Payer deadline near' raised it.",
    },
    # Free text, most specific topic first.
    {
        "name": "Claim denial",
        "order": 200,
        "phrases": [
            "claim denied",
            "claim was denied",
            "denied claim",
            "denied the claim",
            "denied my claim",
            "claim denial",
            "denial",
        ],
        "set_task_type": "claim_denial",
        "stop": True,
    },
    {
        "name": "Referral",
        "order": 210,
        "phrases": ["referral", "referrals", "referred", "referring", "consult request"],
        "set_task_type": "referral_packet",
        "stop": True,
    },
    {
        "name": "Prior authorization question",
        "order": 220,
        "phrases": [
            "prior authorization",
            "prior auth",
            "preauthorization",
            "pre-authorization",
            "pre-auth",
            "authorization number",
        ],
        "set_task_type": "prior_auth_update",
        "set_priority": Priority.P3,
        "stop": True,
    },
    {
        "name": "Payment plan",
        "order": 230,
        "phrases": [
            "payment plan",
            "payment arrangement",
            "installments",
            "monthly payments",
            "pay over time",
            "plan de pagos",
        ],
        "set_task_type": "payment_plan",
        "stop": True,
    },
    {
        "name": "Portal log-in trouble",
        "order": 240,
        "phrases": [
            "password",
            "locked out",
            "can't log in",
            "cant log in",
            "cannot log in",
            "unable to log in",
            "can't sign in",
            "portal access",
            "activation code",
            "login",
            "username",
        ],
        "set_task_type": "portal_access",
        "stop": True,
    },
    {
        "name": "Billing question",
        "order": 250,
        "phrases": [
            "statement",
            "balance",
            "bill",
            "billed",
            "billing",
            "eob",
            "explanation of benefits",
            "copay",
            "co-pay",
            "charge",
            "charged",
            "charges",
            "invoice",
            "refund",
            "factura",
            "cobro",
            "saldo",
        ],
        "set_task_type": "billing_question",
        "stop": True,
    },
    {
        "name": "Records request",
        "order": 260,
        "phrases": [
            "medical records",
            "records",
            "records request",
            "release of information",
            "immunization record",
            "shot record",
            "vaccination record",
            "copy of my chart",
        ],
        "set_task_type": "records_request",
        "stop": True,
    },
    {
        "name": "Registration and admissions",
        "order": 270,
        "phrases": [
            "admission",
            "admissions",
            "admitted",
            "registration",
            "register",
            "pre-register",
            "new patient",
            "bed",
            "paciente nuevo",
        ],
        "set_task_type": "registration_admission",
        "stop": True,
    },
    {
        "name": "Insurance change",
        "order": 280,
        "phrases": [
            "insurance card",
            "new insurance",
            "changed insurance",
            "switched insurance",
            "verify my coverage",
            "eligibility",
        ],
        "set_task_type": "eligibility_verification",
        "stop": True,
    },
    {
        "name": "Appointments",
        "order": 290,
        "phrases": [
            "reschedule",
            "cancel my appointment",
            "appointment",
            "appointments",
            "appt",
            "schedule",
            "book",
            "next available",
            "cita",
            "citas",
        ],
        "set_task_type": "appointment_request",
        "stop": True,
    },
    {
        "name": "Callback request",
        "order": 300,
        "phrases": [
            "call me back",
            "call back",
            "callback",
            "give me a call",
            "return my call",
            "call me at",
            "llamar",
            "llámeme",
        ],
        "set_task_type": "callback_request",
        "stop": True,
        "notes": "The most generic topic, so it comes last.",
    },
]

# What the front desk chose on the intake form (a walk-in or a call) is the request type: one
# rule a type, after the tag rules and before free text, so the person's choice decides the
# type and the routing rules still decide the queue. Red flags still win over it.
CLASSIFICATION_RULES += [
    {
        "name": f"Front desk chose {task_type['name'].lower()}",
        "order": 90,
        "channels": ["form", "phone"],
        "request_types": [task_type["code"]],
        "set_task_type": task_type["code"],
        "stop": True,
        "notes": "The type a person picked on the front-desk form.",
    }
    for task_type in TASK_TYPES
]

ROUTING_RULES = [
    {
        "name": "Spanish appointments and callbacks: a Spanish-speaking scheduler",
        "order": 10,
        "task_types": ["appointment_request", "callback_request"],
        "tags_any": ["spanish"],
        "target_queue": "scheduling",
        "required_skill": "spanish",
        "min_skill_level": 2,
    },
    {
        "name": "Spanish billing: a Spanish-speaking biller",
        "order": 20,
        "task_types": ["billing_question", "payment_plan", "claim_denial"],
        "tags_any": ["spanish"],
        "target_queue": "billing",
        "required_skill": "spanish",
        "min_skill_level": 3,
    },
    {
        "name": "Denied-claim appeals: payer appeals level 3",
        "order": 30,
        "task_types": ["claim_denial"],
        "tags_any": ["appeal"],
        "target_queue": "billing",
        "required_skill": "payer-appeals",
        "min_skill_level": 3,
    },
    {
        "name": "Medicare authorizations: Medicare prior-auth skill",
        "order": 40,
        "task_types": ["prior_auth_update", "prior_auth_request"],
        "tags_any": ["medicare"],
        "target_queue": "prior-auth",
        "required_skill": "prior-auth-medicare",
        "min_skill_level": 2,
    },
    {
        "name": "Portal log-in trouble: Medical records",
        "order": 50,
        "task_types": ["portal_access"],
        "target_queue": "records",
    },
    {
        "name": "Callbacks: Scheduling returns the calls",
        "order": 60,
        "task_types": ["callback_request"],
        "target_queue": "scheduling",
    },
    {
        "name": "Normal results: Lab results (pulled between calls)",
        "order": 70,
        "task_types": ["lab_result_followup"],
        "priority_min": Priority.P4,
        "priority_max": Priority.P4,
        "target_queue": "lab-results",
    },
]
# A request about a matter already open joins it instead of becoming a second piece of work.
DEDUP_POLICIES = [
    {
        "task_type": "billing_question",
        "match": DedupPolicy.Match.PATIENT_AND_TYPE,
        "window_hours": 72,
        "notes": "A patient who calls, then writes through the portal about one bill.",
    },
    {
        "task_type": "callback_request",
        "match": DedupPolicy.Match.PATIENT_AND_TYPE,
        "window_hours": 24,
        "notes": "Two voicemails asking for the same call back.",
    },
    {
        "task_type": "referral_packet",
        "match": DedupPolicy.Match.EITHER,
        "window_hours": 7 * 24,
        "notes": "The missing pages of a referral, faxed again, join the referral.",
    },
    {
        "task_type": "general_inquiry",
        "match": DedupPolicy.Match.THREAD,
        "window_hours": 7 * 24,
        "notes": "The next message of an email conversation that is still open.",
    },
]

WORKFLOW_TEMPLATES = [
    {
        "name": "Referral processed: eligibility, authorization, scheduling",
        "trigger_type": "referral_packet",
        "trigger": WorkflowTemplate.Trigger.RESOLVED,
        "description": (
            "A complete referral sets off the front desk's eligibility check and the prior "
            "authorization; scheduling books the visit once the authorization is resolved."
        ),
        "steps": [
            {"order": 10, "task_type": "eligibility_verification"},
            {"order": 20, "task_type": "prior_auth_request"},
            {
                "order": 30,
                "task_type": "scheduling_readiness",
                "blocked_until": "prior_auth_request",
            },
        ],
    },
]
# No after-hours rule: the demo has no on-call queue. The on-call nurse (nurse3) works the
# Clinical triage queue, so red flags at night reach them without one.


# SLA clocks: clinic hours for the business-time targets (weekdays 8 to 5 at Riverside, with
# New York's public holidays), and a policy per kind of work, the most specific first. The
# prior-authorization one is the example managers ask for: claimed within 2 business hours,
# or the authorization lead hears of it.
MON_FRI_HOURS = {str(day): [["08:00", "17:00"]] for day in range(5)}
SLA_CALENDAR = {
    "name": "Riverside clinic hours",
    "time_zone": "America/New_York",
    "hours": MON_FRI_HOURS,
    "country": "US",
    "subdivision": "NY",
}
BUSINESS_DAY = 9 * 60  # minutes of clinic hours in a day
SLA_POLICIES = [
    {
        "name": "Red flags: a nurse within 15 minutes",
        "order": 10,
        "priorities": [1],
        "queues": ["triage"],
        "first_claim_minutes": 15,
        "resolution_minutes": 120,
        "business_hours": False,
        "steps": [
            {"level": 1, "target": "first_claim", "percent": 50, "action": "mark_at_risk"},
            {
                "level": 2,
                "target": "first_claim",
                "percent": 100,
                "action": "notify_address",
                "address": f"triage-lead@{DEMO_EMAIL_DOMAIN}",
            },
        ],
    },
    {
        "name": "Prior authorization: claimed within 2 business hours",
        "order": 20,
        "task_types": ["prior_auth_request", "prior_auth_update"],
        "first_claim_minutes": 120,
        "resolution_minutes": 2 * BUSINESS_DAY,
        "business_hours": True,
        "steps": [
            {"level": 1, "target": "first_claim", "percent": 75, "action": "mark_at_risk"},
            {
                "level": 2,
                "target": "first_claim",
                "percent": 100,
                "action": "notify_address",
                "address": f"auth-lead@{DEMO_EMAIL_DOMAIN}",
            },
            {"level": 3, "target": "resolution", "percent": 100, "action": "raise_priority"},
        ],
    },
    {
        "name": "Billing questions: answered in 2 business days",
        "order": 30,
        "task_types": ["billing_question"],
        "first_claim_minutes": None,
        "resolution_minutes": 2 * BUSINESS_DAY,
        "business_hours": True,
        "steps": [
            {"level": 1, "target": "resolution", "percent": 75, "action": "mark_at_risk"},
            {"level": 2, "target": "resolution", "percent": 100, "action": "notify_supervisor"},
        ],
    },
    {
        "name": "Everything else: claimed the same business day",
        "order": 100,
        "first_claim_minutes": 8 * 60,
        "resolution_minutes": 3 * BUSINESS_DAY,
        "business_hours": True,
        "steps": [
            {"level": 1, "target": "first_claim", "percent": 75, "action": "mark_at_risk"},
            {"level": 2, "target": "resolution", "percent": 100, "action": "notify_supervisor"},
        ],
    },
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
    password = _DemoPassword(settings.DEMO_PASSWORD)
    for spec in STAFF:
        user = _demo_user(spec, result, password)
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


def build_rules(
    queues: dict[str, Queue],
    task_types: dict[str, TaskType],
    skills: dict[str, Skill],
    result: DemoResult,
) -> RuleSet:
    """The demo rule set, found by version. A re-run restores the demo rules (by name) and
    leaves rules a manager added alone; it activates the set only when none is active."""
    spec = RULE_SET
    values = {
        "name": spec["name"],
        "description": spec["description"],
        "review_queue": queues[spec["review_queue"]],
        "red_flag_queue": queues[spec["red_flag_queue"]],
        "red_flag_task_type": task_types[spec["red_flag_task_type"]],
        "red_flag_phrases": "\n".join(spec["red_flag_phrases"]),
    }
    rule_set = RuleSet.objects.filter(version=spec["version"]).first()
    existed = rule_set is not None
    before = sum(result.created.values()) + sum(result.updated.values())
    if rule_set is None:
        rule_set = RuleSet.objects.create(version=spec["version"], **values)
        result.created[str(RuleSet._meta.verbose_name_plural)] += 1
    else:
        rule_set = _upsert(RuleSet, {"version": spec["version"]}, values, result)
    if not RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).exists():
        rule_set.status = RuleSet.Status.ACTIVE
        rule_set.activated_at = timezone.now()
        rule_set.save(update_fields=["status", "activated_at"])
        if existed:
            result.updated[str(RuleSet._meta.verbose_name_plural)] += 1

    for rule in CLASSIFICATION_RULES:
        values = {
            "order": rule["order"],
            "mode": "active",
            "rollout_percent": 100,
            "channels": list(rule.get("channels", [])),
            "phrases": "\n".join(rule.get("phrases", [])),
            "phrase_match": rule.get("phrase_match", ClassificationRule.PhraseMatch.ANY),
            "regex": rule.get("regex", ""),
            "request_types": list(rule.get("request_types", [])),
            "source_systems": list(rule.get("source_systems", [])),
            "set_task_type": task_types[rule["set_task_type"]]
            if rule.get("set_task_type")
            else None,
            "set_priority": rule.get("set_priority"),
            "min_priority": rule.get("min_priority"),
            "add_tags": list(rule.get("add_tags", [])),
            "stop": rule.get("stop", False),
            "notes": rule.get("notes", ""),
        }
        _upsert(ClassificationRule, {"rule_set": rule_set, "name": rule["name"]}, values, result)

    for rule in ROUTING_RULES:
        values = {
            "order": rule["order"],
            "mode": "active",
            "rollout_percent": 100,
            "channels": list(rule.get("channels", [])),
            "priority_min": rule.get("priority_min", Priority.P1),
            "priority_max": rule.get("priority_max", Priority.P4),
            "tags_any": list(rule.get("tags_any", [])),
            "business_hours": rule.get("business_hours", RoutingRule.BusinessHours.ANY),
            "weekdays": list(rule.get("weekdays", [])),
            "time_from": rule.get("time_from"),
            "time_to": rule.get("time_to"),
            "target_queue": queues[rule["target_queue"]],
            "required_skill": skills[rule["required_skill"]]
            if rule.get("required_skill")
            else None,
            "min_skill_level": rule.get("min_skill_level", 1),
            "priority_override": rule.get("priority_override"),
            "notes": rule.get("notes", ""),
        }
        routing_rule = _upsert(
            RoutingRule, {"rule_set": rule_set, "name": rule["name"]}, values, result
        )
        wanted = {task_types[code].pk for code in rule.get("task_types", [])}
        if set(routing_rule.task_types.values_list("pk", flat=True)) != wanted:
            routing_rule.task_types.set(wanted)
            result.updated[str(RoutingRule._meta.verbose_name_plural)] += 1

    # Routing caches follow the revision: raise it when this run changed the set's rules.
    changed = sum(result.created.values()) + sum(result.updated.values()) > before
    if existed and changed:
        RuleSet.objects.filter(pk=rule_set.pk).update(revision=DbF("revision") + 1)
    return rule_set


def build_intake_policies(task_types: dict[str, TaskType], result: DemoResult) -> None:
    """The dedup policies and workflow templates, found by type and by name."""
    for spec in DEDUP_POLICIES:
        values = {**_without(spec, "task_type"), "is_active": True}
        _upsert(DedupPolicy, {"task_type": task_types[spec["task_type"]]}, values, result)
    for spec in WORKFLOW_TEMPLATES:
        values = {
            "trigger_type": task_types[spec["trigger_type"]],
            "trigger": spec["trigger"],
            "description": spec["description"],
            "is_active": True,
        }
        template = _upsert(WorkflowTemplate, {"name": spec["name"]}, values, result)
        for step in spec["steps"]:
            blocked_until = step.get("blocked_until")
            _upsert(
                WorkflowStep,
                {"template": template, "task_type": task_types[step["task_type"]]},
                {
                    "order": step["order"],
                    "subject": step.get("subject", ""),
                    "blocked_until": task_types[blocked_until] if blocked_until else None,
                },
                result,
            )


def build_sla_policies(
    queues: dict[str, Queue], task_types: dict[str, TaskType], result: DemoResult
) -> None:
    """The clinic-hours calendar and the SLA policies with their escalation steps, found by
    name (and steps by level): a re-run changes nothing."""
    from escalation.models import BusinessCalendar, EscalationStep, SlaPolicy
    from escalation.services import sla_configuration_changed

    writes_before = sum(result.created.values()) + sum(result.updated.values())
    relinked = False
    calendar = _upsert(
        BusinessCalendar, {"name": SLA_CALENDAR["name"]}, _without(SLA_CALENDAR, "name"), result
    )
    for spec in SLA_POLICIES:
        values = {
            "order": spec["order"],
            "is_active": True,
            "priorities": spec.get("priorities", []),
            "first_claim_minutes": spec["first_claim_minutes"],
            "resolution_minutes": spec["resolution_minutes"],
            "calendar": calendar if spec["business_hours"] else None,
        }
        policy = _upsert(SlaPolicy, {"name": spec["name"]}, values, result)
        wanted_types = {task_types[code].pk for code in spec.get("task_types", [])}
        if set(policy.task_types.values_list("pk", flat=True)) != wanted_types:
            policy.task_types.set(wanted_types)
            relinked = True
        wanted_queues = {queues[code].pk for code in spec.get("queues", [])}
        if set(policy.queues.values_list("pk", flat=True)) != wanted_queues:
            policy.queues.set(wanted_queues)
            relinked = True
        for step in spec["steps"]:
            values = {"address": "", **_without(step, "level")}
            _upsert(EscalationStep, {"policy": policy, "level": step["level"]}, values, result)
    if relinked or sum(result.created.values()) + sum(result.updated.values()) > writes_before:
        # Open tasks already in the clinic come under the (new) policies too.
        sla_configuration_changed()


@transaction.atomic
def build_demo_clinic() -> DemoResult:
    result = DemoResult()
    sites = build_sites(result)
    departments = build_departments(sites, result)
    queues = build_queues(departments, result)
    skills = build_skills(result)
    task_types = build_task_types(departments, queues, result)
    build_staff(sites, departments, skills, result)
    build_rules(queues, task_types, skills, result)
    build_intake_policies(task_types, result)
    build_sla_policies(queues, task_types, result)
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
        "rule set": RuleSet.objects.filter(version=RULE_SET["version"]).count(),
        "classification rules": ClassificationRule.objects.filter(
            rule_set__version=RULE_SET["version"],
            name__in=[r["name"] for r in CLASSIFICATION_RULES],
        ).count(),
        "routing rules": RoutingRule.objects.filter(
            rule_set__version=RULE_SET["version"], name__in=[r["name"] for r in ROUTING_RULES]
        ).count(),
        "dedup policies": DedupPolicy.objects.filter(
            task_type__code__in=[d["task_type"] for d in DEDUP_POLICIES]
        ).count(),
        "workflow templates": WorkflowTemplate.objects.filter(
            name__in=[w["name"] for w in WORKFLOW_TEMPLATES]
        ).count(),
        "SLA policies": _sla_policy_count(),
    }


def _sla_policy_count() -> int:
    from escalation.models import SlaPolicy

    return SlaPolicy.objects.filter(name__in=[p["name"] for p in SLA_POLICIES]).count()


def is_demo_user(user) -> bool:
    return user.email.lower().endswith(f"@{DEMO_EMAIL_DOMAIN}")


class _DemoPassword:
    """The demo password, hashed once per run and shared by the demo users it creates or
    restores. A password hash costs ~0.2 s by design; one per run, not one per user, keeps
    `demo` fast. Each distinct stored hash is checked once (demo users normally share one)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._hash = ""
        self._checked: dict[str, bool] = {}

    def hash(self) -> str:
        if not self._hash:
            self._hash = make_password(self.raw)
        return self._hash

    def matches(self, encoded: str) -> bool:
        if encoded not in self._checked:
            self._checked[encoded] = check_password(self.raw, encoded)
        return self._checked[encoded]


def _demo_user(spec: dict, result: DemoResult, password: _DemoPassword):
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
        user = User(username=spec["username"], password=password.hash(), **values)
        user.save()
        result.created["users"] += 1
        return user
    if not is_demo_user(user):
        result.skipped_users.append(user.username)
        return None
    changed = [key for key, value in values.items() if getattr(user, key) != value]
    # The logins table promises the demo password; restore it if someone changed it.
    if not password.matches(user.password):
        user.password = password.hash()
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
        return getattr(obj, field.attname) == (value.pk if value is not None else None)
    return getattr(obj, key) == value


def _without(spec: dict, *keys: str) -> dict:
    return {key: value for key, value in spec.items() if key not in keys}
