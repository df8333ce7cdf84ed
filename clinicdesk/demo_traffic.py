"""A generated clinic morning for the demo (`manage.py demo --tasks N`), the tests and the
benchmarks: portal messages, voicemail transcripts, lab results from the EHR and payers'
prior-authorization updates, written the way they really arrive (varied openers, payers,
procedures, medications, dates, call-back numbers, lower case, typos, "um" and "uh").

Every `DemoItem` carries where it belongs, as a person at the clinic would decide
(`expected_queue`, `expected_type`, `expected_priority`), so the accuracy of the demo rules
(clinicdesk/demo.py) can be measured; a few items are worded so that the rules miss them.
`generate_morning` is pure and deterministic: same `n` and `seed`, same items, on any day.
`submit_morning` pushes the items through intake and routing (`routing.services.task_submit`).
"""

from __future__ import annotations

import random
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Count, Q
from django.utils import timezone

DEFAULT_SEED = 2025
DEMO_ACTOR = "system:demo"
MORNING_START = time(8, 0)
MORNING_SECONDS = 4 * 3600  # 8:00-12:00
CLINIC_ZONE = "America/New_York"

# The mix of a 250-item morning; other sizes keep the proportions (largest remainder).
STREAMS = {"portal": 80, "phone": 60, "lab": 55, "prior_auth": 55}
STREAM_LABELS = {
    "portal": "portal messages",
    "phone": "voicemails",
    "lab": "lab results",
    "prior_auth": "prior-auth updates",
}

# kind -> (expected queue, expected type, expected priority); "" / None: Needs review
EXPECTED: dict[str, tuple[str, str, int | None]] = {
    "appointment": ("scheduling", "appointment_request", 3),
    # A person reads these as appointment changes; they name no appointment word, so the
    # demo rules send them to Needs review (the misses the accuracy figure counts).
    "appointment_unclear": ("scheduling", "appointment_request", 3),
    "callback": ("scheduling", "callback_request", 3),
    "billing_question": ("billing", "billing_question", 3),
    "payment_plan": ("billing", "payment_plan", 4),
    "claim_denial": ("billing", "claim_denial", 2),
    "claim_appeal": ("billing", "claim_denial", 2),
    "records": ("records", "records_request", 3),
    "portal_access": ("records", "portal_access", 4),
    "registration": ("front-desk", "registration_admission", 3),
    "admission": ("front-desk", "registration_admission", 3),
    "eligibility": ("front-desk", "eligibility_verification", 3),
    "referral": ("referrals", "referral_packet", 3),
    "prior_auth_question": ("prior-auth", "prior_auth_update", 3),
    "red_flag": ("triage", "clinical_triage", 1),
    "spanish_appointment": ("scheduling", "appointment_request", 3),
    "spanish_billing": ("billing", "billing_question", 3),
    "spanish_callback": ("scheduling", "callback_request", 3),
    "ambiguous": ("needs-review", "", None),
    "spanish_ambiguous": ("needs-review", "", None),
    "lab_critical": ("triage", "lab_result_followup", 1),
    "lab_abnormal": ("triage", "lab_result_followup", 2),
    "lab_normal": ("lab-results", "lab_result_followup", 4),
    "pa_approved": ("prior-auth", "prior_auth_update", 3),
    "pa_received": ("prior-auth", "prior_auth_update", 3),
    "pa_info_requested": ("prior-auth", "prior_auth_update", 2),
    "pa_denied": ("prior-auth", "prior_auth_update", 2),
    "pa_peer_to_peer": ("prior-auth", "prior_auth_update", 2),
    "pa_expiring": ("prior-auth", "prior_auth_update", 2),
}

# The kinds of each stream and their share of it (weights sum to the stream's 250-mix size).
KINDS: dict[str, list[tuple[str, int]]] = {
    "portal": [
        ("appointment", 15),
        ("billing_question", 10),
        ("records", 9),
        ("referral", 5),
        ("payment_plan", 4),
        ("portal_access", 4),
        ("registration", 4),
        ("prior_auth_question", 4),
        ("red_flag", 4),
        ("ambiguous", 3),
        ("claim_denial", 3),
        ("eligibility", 3),
        ("spanish_appointment", 3),
        ("claim_appeal", 2),
        ("callback", 2),
        ("spanish_billing", 2),
        ("spanish_ambiguous", 1),
        ("appointment_unclear", 2),
    ],
    "phone": [
        ("appointment", 11),
        ("callback", 7),
        ("billing_question", 6),
        ("portal_access", 5),
        ("referral", 5),
        ("admission", 4),
        ("payment_plan", 3),
        ("records", 3),
        ("prior_auth_question", 3),
        ("red_flag", 3),
        ("ambiguous", 2),
        ("spanish_appointment", 2),
        ("claim_denial", 1),
        ("claim_appeal", 1),
        ("eligibility", 1),
        ("spanish_callback", 1),
        ("spanish_billing", 1),
        ("appointment_unclear", 1),
    ],
    "lab": [("lab_normal", 35), ("lab_abnormal", 16), ("lab_critical", 4)],
    "prior_auth": [
        ("pa_approved", 18),
        ("pa_received", 10),
        ("pa_info_requested", 10),
        ("pa_denied", 7),
        ("pa_peer_to_peer", 6),
        ("pa_expiring", 4),
    ],
}


@dataclass(frozen=True, slots=True)
class DemoItem:
    """One inbound request of the demo morning, and where it belongs."""

    channel: str
    subject: str
    body: str
    request_type: str
    expected_queue: str  # a Queue code of the demo clinic
    red_flag: bool = False
    ambiguous: bool = False  # nothing in it says what it is: Needs review is right
    expected_type: str = ""  # a TaskType code; "" for Needs review
    expected_priority: int | None = None
    kind: str = ""
    external_id: str = ""
    source_system: str = ""
    site: str = "riverside"
    received_seconds: int = 0  # after 8:00, the clinic's local time
    patient_mrn: str = ""
    patient_name: str = ""
    patient_birth_date: date | None = None
    metadata: dict = field(default_factory=dict, compare=False)

    def received_at(self, day: date, zone: str = CLINIC_ZONE) -> datetime:
        start = datetime.combine(day, MORNING_START, tzinfo=ZoneInfo(zone))
        return start + timedelta(seconds=self.received_seconds)


def split(total: int, weights: Sequence[int]) -> list[int]:
    """`total` shared in proportion to `weights`, largest remainder first: the parts sum to
    `total` exactly, and weights that sum to `total` come back unchanged."""
    whole = sum(weights)
    if whole <= 0 or total <= 0:
        return [0] * len(weights)
    raw = [total * w / whole for w in weights]
    parts = [int(r) for r in raw]
    order = sorted(range(len(weights)), key=lambda i: (-(raw[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def mix(n: int) -> dict[str, int]:
    """How many items of each stream a morning of `n` has (80/60/55/55 for 250)."""
    return dict(zip(STREAMS, split(n, list(STREAMS.values())), strict=True))


# --- Vocabulary ------------------------------------------------------------------------------

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
PAYERS = (
    "Aetna",
    "Cigna",
    "UnitedHealthcare",
    "Blue Cross Blue Shield",
    "Anthem",
    "Humana",
    "Oscar Health",
    "Ambetter",
    "Tricare",
    "MassHealth",
    "Harvard Pilgrim",
    "Tufts Health Plan",
)
MEDICARE_PAYERS = (
    "Humana Medicare Advantage",
    "Aetna Medicare",
    "UnitedHealthcare Medicare Advantage",
    "Medicare Advantage (Wellcare)",
)
PROCEDURES = (
    "MRI lumbar spine without contrast",
    "MRI right knee",
    "MRI left shoulder",
    "CT abdomen and pelvis with contrast",
    "CT chest",
    "PET/CT",
    "polysomnography (sleep study)",
    "screening colonoscopy",
    "upper endoscopy",
    "transthoracic echocardiogram",
    "physical therapy, 12 visits",
    "knee arthroscopy",
    "DEXA scan",
    "Holter monitor, 48 hours",
    "CPAP supplies",
    "allergy testing",
)
MEDICATIONS = (
    "Ozempic 0.5 mg",
    "Mounjaro 5 mg",
    "Humira 40 mg",
    "Dupixent 300 mg",
    "Eliquis 5 mg",
    "Jardiance 10 mg",
    "Xarelto 20 mg",
    "Trulicity 1.5 mg",
    "Skyrizi 150 mg",
    "Enbrel 50 mg",
)
SPECIALTIES = (
    "cardiology",
    "dermatology",
    "orthopedics",
    "gastroenterology",
    "endocrinology",
    "neurology",
    "physical therapy",
    "podiatry",
    "ENT",
    "rheumatology",
)
MISSING_INFO = ("last 2 office notes", "imaging report", "PT notes", "A1c history")
DENIAL_REASONS = ("not medically necessary", "step therapy not met", "out of network provider")
CITIES = (
    "Springfield",
    "Worcester",
    "Hartford",
    "Albany",
    "Providence",
    "Syracuse",
    "Burlington",
    "Portland",
    "Scranton",
    "Allentown",
)
LABS = ("Quest Diagnostics", "LabCorp", "Riverside Hospital Laboratory", "BioReference")
LAB_SYSTEMS = {
    "Quest Diagnostics": "quest-fhir",
    "LabCorp": "labcorp-fhir",
    "Riverside Hospital Laboratory": "riverside-hospital-ehr",
    "BioReference": "bioreference-fhir",
}
# test -> (LOINC, unit, normal low, normal high, decimals, critical low, critical high)
LAB_TESTS: dict[str, tuple[str, str, float, float, int, float | None, float | None]] = {
    "Potassium, serum": ("2823-3", "mmol/L", 3.5, 5.1, 1, 2.8, 6.2),
    "Sodium, serum": ("2951-2", "mmol/L", 136, 145, 0, 120, 160),
    "Glucose, fasting": ("1558-6", "mg/dL", 70, 99, 0, 45, 450),
    "Hemoglobin A1c": ("4548-4", "%", 4.0, 5.6, 1, None, None),
    "Hemoglobin": ("718-7", "g/dL", 12.0, 17.5, 1, 6.5, None),
    "Platelet count": ("777-3", "10*3/uL", 150, 400, 0, 40, 1000),
    "WBC count": ("6690-2", "10*3/uL", 4.0, 11.0, 1, 1.5, 30.0),
    "Creatinine": ("2160-0", "mg/dL", 0.6, 1.3, 2, None, 5.0),
    "TSH": ("3016-3", "mIU/L", 0.4, 4.5, 2, None, None),
    "LDL cholesterol": ("13457-7", "mg/dL", 0, 99, 0, None, None),
    "Vitamin D, 25-hydroxy": ("1989-3", "ng/mL", 30, 100, 0, None, None),
    "ALT": ("1742-6", "U/L", 7, 56, 0, None, None),
    "INR": ("6301-6", "", 0.8, 1.1, 1, None, 5.0),
    "Troponin I (hs)": ("89579-7", "ng/L", 0, 20, 0, None, 100),
}
# Qualitative tests: a normal result reads "negative" / "not detected".
LAB_QUALITATIVE = (
    ("Urine culture", "630-4", "No growth at 48 hours", "Escherichia coli >100,000 CFU/mL"),
    ("Strep A rapid antigen", "78012-2", "Negative", "Positive"),
    ("Hepatitis C antibody", "13955-0", "Nonreactive", "Reactive, positive for HCV antibody"),
    ("Fecal occult blood", "2335-8", "Negative", "Positive"),
)

TYPOS = {
    "received": "recieved",
    "receive": "recieve",
    "tomorrow": "tommorow",
    "because": "becuase",
    "really": "realy",
    "thanks": "thx",
    "please": "pls",
    "definitely": "definately",
    "weird": "wierd",
    "message": "mesage",
    "until": "untill",
    "know": "kno",
    "would": "woud",
}
FILLERS = ("um", "uh", "um", "uh", "so", "yeah", "like", "you know", "uh so", "um yeah")
NAME_STOPWORDS = {"bill"}  # a first name that reads as a rule phrase


class _Writer:
    """Random slots for the templates, all drawn from one seeded generator."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.patients: list[tuple[str, str, str, date]] = []

    # slots
    def pick(self, options: Sequence):
        return self.rng.choice(options)

    def maybe(self, p: float) -> bool:
        return self.rng.random() < p

    def first_name(self) -> str:
        while True:
            name = self.fake.first_name()
            if name.lower() not in NAME_STOPWORDS:
                return name

    def last_name(self) -> str:
        return self.fake.last_name()

    def doctor(self) -> str:
        return f"Dr. {self.last_name()}"

    def practice(self) -> str:
        return f"{self.last_name()} {self.pick(('Family Medicine', 'Medical Group', 'Health'))}"

    def phone(self) -> str:
        area = self.pick(("413", "617", "508", "774", "978", "857"))
        number = f"{area}-555-{self.rng.randrange(100, 200):04d}"
        style = self.rng.randrange(3)
        if style == 0:
            return f"({area}) 555-{number[-4:]}"
        if style == 1:
            return number
        return number.replace("-", ".")

    def spoken_phone(self) -> str:
        digits = self.phone()
        return " ".join(c for c in digits if c.isdigit()) if self.maybe(0.3) else digits

    def day(self) -> str:
        month, dom = self.pick(MONTHS), self.rng.randrange(1, 29)
        style = self.rng.randrange(4)
        if style == 0:
            return f"{month} {dom}"
        if style == 1:
            return f"{MONTHS.index(month) + 1}/{dom}"
        if style == 2:
            return f"{self.pick(WEEKDAYS)} the {_ordinal(dom)}"
        return f"{self.pick(WEEKDAYS)}, {month[:3]} {dom}"

    def clock(self) -> str:
        hour = self.rng.choice((8, 9, 10, 11, 1, 2, 3, 4))
        minute = self.pick(("00", "15", "30", "45"))
        return f"{hour}:{minute}{self.pick((' am', 'am', ' AM', '')) if hour >= 8 else ' pm'}"

    def amount(self, low: int = 25, high: int = 1900) -> str:
        cents = self.pick(("00", "00", "50", f"{self.rng.randrange(100):02d}"))
        return f"${self.rng.randrange(low, high):,}.{cents}"

    def ref(self, prefix: str = "") -> str:
        return f"{prefix}{self.rng.randrange(10**7, 10**8)}"

    def payer(self, medicare_share: float = 0.0) -> str:
        if self.maybe(medicare_share):
            return self.pick(MEDICARE_PAYERS)
        return self.pick(PAYERS)

    def patient(self) -> tuple[str, str, str, date]:
        """(MRN, first, last, birth date); about one in four requests is from a patient
        who already sent one this morning."""
        if self.patients and self.maybe(0.25):
            return self.pick(self.patients)
        birth = date(1932, 1, 1) + timedelta(days=self.rng.randrange(0, 33_000))
        person = (f"RFP{self.rng.randrange(100000, 1000000)}", *self._name(), birth)
        self.patients.append(person)
        return person

    def _name(self) -> tuple[str, str]:
        return self.first_name(), self.last_name()

    # wording
    def opener(self) -> str:
        return self.pick(
            (
                "Hi,",
                "Hello,",
                "Good morning,",
                "Hi there,",
                "Hello.",
                "To whom it may concern,",
                "Hey,",
                "",
                "",
                "Good afternoon,",
            )
        )

    def closer(self, first: str) -> str:
        return self.pick(
            (
                "Thanks,",
                "Thank you!",
                "thanks",
                f"- {first}",
                f"Thanks, {first}",
                "Thank you for your help.",
                "",
                "Appreciate it.",
                f"Regards, {first}",
            )
        )

    def roughen(self, text: str, *, lower: float = 0.2, typo: float = 0.35) -> str:
        """What people type: sometimes all lower case, sometimes a typo or two."""
        if self.maybe(typo):
            words = text.split(" ")
            spots = [i for i, w in enumerate(words) if w.lower().strip(".,!?") in TYPOS]
            for i in self.rng.sample(spots, k=min(len(spots), self.rng.randrange(1, 3))):
                bare = words[i].lower().strip(".,!?")
                words[i] = words[i].lower().replace(bare, TYPOS[bare])
            text = " ".join(words)
        if self.maybe(lower):
            text = text.lower()
        return text

    def transcribe(self, sentences: Sequence[str]) -> str:
        """A voicemail transcript: fillers between clauses, lower case, thin punctuation."""
        parts: list[str] = []
        for sentence in sentences:
            if not sentence:
                continue
            for clause in sentence.split(", "):
                if parts and self.maybe(0.3):
                    parts.append(self.pick(FILLERS))
                parts.append(clause.rstrip("."))
        text = " ".join(parts)
        if self.maybe(0.5):
            text = text.replace("?", "").replace("!", "")
        return text.lower() if self.maybe(0.7) else text[:1].upper() + text[1:] + "."


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# --- Portal messages and voicemails: what the person says, per kind -------------------------
# Each returns (portal subject, sentences). The portal joins the sentences into a message;
# the phone stream turns them into a transcript behind a greeting.

Say = Callable[[_Writer, dict], tuple[str, list[str]]]


def _appointment(w: _Writer, p: dict) -> tuple[str, list[str]]:
    day, clock, doc = w.day(), w.clock(), w.doctor()
    reason = w.pick(
        (
            "something came up at work",
            "my daughter has a school thing",
            "I have a conflict",
            "my ride fell through",
            "I'll be out of town",
            "my shift changed",
        )
    )
    body = w.pick(
        (
            f"I need to reschedule my appointment on {day} at {clock}, {reason}.",
            f"Please cancel my appointment on {day}. I'm feeling better, thanks.",
            f"Can I move my appointment with {doc} on {day}? {reason.capitalize()}.",
            f"I'd like to book my annual physical with {doc}, mornings are best for me.",
            f"Do you have anything sooner than {day}? I'll take the next available with {doc}.",
            f"Could you schedule a follow up visit for my blood pressure check in about "
            f"{w.pick(('two weeks', 'a month', '6 weeks', 'three months'))}?",
            f"I have to reschedule {day}, {reason}. Any afternoon next week works.",
            f"My appt is {day} at {clock} but {reason}, can we push it a week?",
            f"Is there an appointment open this {w.pick(WEEKDAYS)} for my son's sports physical?",
            f"I need to cancel my appointment for {day} and rebook for later in the month.",
        )
    )
    subject = w.pick(
        (
            "Reschedule",
            "Appointment",
            "Appointment change",
            "Need to reschedule",
            "Cancel appointment",
            "appt question",
            "Booking a visit",
            "Can I come in sooner?",
            f"{day} visit",
        )
    )
    return subject, [body]


def _appointment_unclear(w: _Writer, p: dict) -> tuple[str, list[str]]:
    weekday = w.pick(WEEKDAYS)
    subject, body = w.pick(
        (
            (weekday, f"I can't make it on {weekday} after all, can we find another day?"),
            (
                "Change of plans",
                f"Something came up for {w.day()}. Is there another time with {w.doctor()}?",
            ),
            (
                "Running late",
                f"I'm running about {w.pick(('15', '20', '30'))} minutes late for my "
                f"{w.clock()} today, is that ok or should I come another day?",
            ),
            (
                "Visit time",
                f"The {w.day()} time doesn't work for me anymore, anything later that week?",
            ),
        )
    )
    return subject, [body]


def _callback(w: _Writer, p: dict) -> tuple[str, list[str]]:
    phone = w.spoken_phone()
    body = w.pick(
        (
            f"Please call me back at {phone} when you get a chance.",
            f"Can someone give me a call at {phone}? It's about my mom's care.",
            f"I'm returning a call from your office, please call me back at {phone}.",
            f"Someone from your office called me {w.pick(('yesterday', 'this morning'))}, "
            f"please call back at {phone}.",
            f"Could a nurse or someone return my call, I'm at {phone} until {w.clock()}.",
            f"Just trying to reach {w.doctor()}'s office, call me at {phone}.",
        )
    )
    return w.pick(("Call me", "Please call", "Returning your call", "Phone call")), [body]


def _billing_question(w: _Writer, p: dict) -> tuple[str, list[str]]:
    day, amount, payer = w.day(), w.amount(), w.payer()
    body = w.pick(
        (
            f"I got a statement for {amount} for my visit on {day} but I thought {payer} "
            "covered it. Can someone explain?",
            f"Why was I charged {amount}? I already paid my copay at the front desk.",
            f"My EOB from {payer} says I owe {w.amount(10, 200)} but your statement says {amount}.",
            f"I think I was billed twice for the same visit on {day}, could I get a refund?",
            "What is my current balance? I want to pay it off before the end of the month.",
            f"Can I get an itemized bill for {day}? My HSA needs it.",
            f"There's a charge of {amount} on my account I don't recognize.",
            f"I paid {amount} online on {day} but the balance still shows on my statement.",
            f"Is the {w.amount(20, 60)} co-pay for telehealth visits the same as in person?",
        )
    )
    subject = w.pick(
        (
            "Billing question",
            "Statement question",
            "charged twice?",
            "Question about my bill",
            "Balance",
            "EOB doesn't match",
            "Charges",
            "Payment",
        )
    )
    return subject, [body]


def _payment_plan(w: _Writer, p: dict) -> tuple[str, list[str]]:
    amount = w.amount(400, 4000)
    monthly = w.amount(25, 150)
    body = w.pick(
        (
            f"I can't pay the {amount} all at once, can I set up a payment plan?",
            f"Is it possible to pay {amount} in monthly payments? Maybe {monthly} a month.",
            f"I lost my job last month. Could we do installments of {monthly} on what I owe?",
            f"Can I pay over time? The {amount} from my surgery visit is a lot right now.",
            f"I'd like a payment arrangement for {amount}, I can do {monthly} every two weeks.",
        )
    )
    return w.pick(("Payment plan", "Paying over time", "Can't pay in full", "Payments")), [body]


def _claim_denial(w: _Writer, p: dict) -> tuple[str, list[str]]:
    payer, day, what = w.payer(), w.day(), w.pick(PROCEDURES)
    why = w.pick(
        (
            "out of network",
            "missing information",
            "not covered",
            "a coding problem",
            "no prior approval",
            "timely filing",
        )
    )
    body = w.pick(
        (
            f"{payer} sent me a letter saying the claim was denied for my {what} on {day}. "
            "What do I do now?",
            f"{payer} denied the claim for my visit on {day}, they say it was {why}?",
            f"I got a denial from {payer} for {what}. The reason says {why}.",
            f"My claim denied notice from {payer} came today, for the {day} visit. Reason: {why}.",
        )
    )
    return w.pick(("Insurance denied", "Claim denied", "Denial letter", "Insurance problem")), [
        body
    ]


def _claim_appeal(w: _Writer, p: dict) -> tuple[str, list[str]]:
    subject, sentences = _claim_denial(w, p)
    ask = w.pick(
        (
            "I want to appeal this.",
            "Can your billing office file an appeal?",
            "Please help me appeal, it was medically necessary.",
            "I'd like to request a reconsideration.",
        )
    )
    return subject, [*sentences, ask]


def _records(w: _Writer, p: dict) -> tuple[str, list[str]]:
    doc, fax = w.doctor(), w.phone()
    body = w.pick(
        (
            f"Please send my medical records to {doc} at {w.practice()}, fax {fax}.",
            f"I need a copy of my immunization record for {w.pick(('school', 'work', 'college'))}.",
            f"Can I get my records from the last {w.pick(('two', 'three', 'five'))} years? "
            "It's for a disability application.",
            "My lawyer's office sent a release of information form last week, has it been "
            "processed?",
            f"My daughter needs her shot record for camp by {w.day()}.",
            f"I'm moving to {w.pick(CITIES)} and need my records sent to my new doctor.",
            "Could you upload my vaccination record to the portal? I can't find it.",
        )
    )
    return w.pick(("Records", "Medical records request", "Need my records", "Forms")), [body]


def _portal_access(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            "I'm locked out of the patient portal after too many tries.",
            "I forgot my password and the reset email never comes.",
            "I can't log in to see my test results, it says my account is disabled.",
            "My activation code expired before I could set up my account.",
            "My husband cant log in to his portal, can you reset it?",
            "I don't remember my username for the portal, my email changed.",
            "The portal keeps saying invalid login even with the right password.",
        )
    )
    return w.pick(("Portal", "locked out", "Password reset", "Can't get into the portal")), [body]


def _registration(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            f"We just moved here from {w.pick(CITIES)}. How do I register as a new patient?",
            "I'd like to register my newborn, she was born last week.",
            "Can I do pre-registration online for my first visit with you?",
            f"My family is looking for a new patient appointment with {w.doctor()}.",
            "What do I need to bring for registration? Is a passport ok as ID?",
        )
    )
    return w.pick(("New patient", "Registration", "Signing up", "Becoming a patient")), [body]


def _admission(w: _Writer, p: dict) -> tuple[str, list[str]]:
    hospital = w.pick(
        ("Riverside General", "Mercy Hospital", "St. Vincent's", "Baystate Medical Center")
    )
    body = w.pick(
        (
            f"This is {w.first_name()} from {hospital} admissions. Your patient was admitted "
            "last night and we need the primary care information.",
            f"I'm calling from {hospital}, we have a bed for your patient on the rehab unit "
            f"starting {w.day()}.",
            f"Hi, it's {hospital} patient access, calling about registration paperwork for "
            "a patient of yours.",
            f"My mother was admitted to {hospital} and they asked me to let her doctor know.",
        )
    )
    return "Hospital admission", [body]


def _eligibility(w: _Writer, p: dict) -> tuple[str, list[str]]:
    payer = w.payer()
    member = w.ref("W")
    body = w.pick(
        (
            f"I have new insurance starting this month: {payer}, member ID {member}.",
            f"I switched insurance to {payer}. Do you need a copy of my insurance card?",
            f"Here is my new insurance card info, {payer} ID {member}, group {w.ref()[:5]}.",
            f"Can you check my eligibility with {payer} before my visit? Member ID {member}.",
        )
    )
    return w.pick(("New insurance", "Insurance update", "Insurance card")), [body]


def _referral(w: _Writer, p: dict) -> tuple[str, list[str]]:
    specialty, doc = w.pick(SPECIALTIES), w.doctor()
    body = w.pick(
        (
            f"{doc} at {specialty} said she sent the referral over, did you receive it?",
            f"My {specialty} doctor referred me to you for primary care, what's next?",
            f"I need a referral to {specialty} for my insurance before {w.day()}.",
            f"This is {w.first_name()} at {w.practice()}, we faxed a referral for your "
            f"patient for {specialty}, please confirm you got it.",
            f"Checking on the status of my {specialty} referral from {w.day()}.",
        )
    )
    return w.pick(("Referral", "Referral status", f"{specialty.title()} referral")), [body]


def _prior_auth_question(w: _Writer, p: dict) -> tuple[str, list[str]]:
    what = w.pick((*PROCEDURES, *MEDICATIONS))
    body = w.pick(
        (
            f"Has my insurance approved the {what} yet? The doctor said it needed a prior auth.",
            f"The pharmacy says {what} needs prior authorization, can you send it?",
            f"Calling about the prior authorization for {what}, the imaging center is waiting.",
            f"Do you have the authorization number for my {what}? They're asking for it.",
        )
    )
    return w.pick(("Prior auth", "Insurance approval", "Authorization question")), [body]


def _red_flag(w: _Writer, p: dict) -> tuple[str, list[str]]:
    day = w.pick(("last night", "this morning", "yesterday", "about an hour ago"))
    body = w.pick(
        (
            f"I've had chest pain on and off since {day}, it goes into my left arm. "
            "Should I come in?",
            f"My inhaler isn't helping and I'm short of breath just walking to the kitchen "
            f"since {day}.",
            f"I have an appointment on {w.day()} but I've had chest pressure since {day}, "
            "should I keep it or come sooner?",
            f"My father has slurred speech since {day} and his face looks droopy on one side.",
            f"Having shortness of breath and my ankles are swollen since {day}.",
            f"My son is having trouble breathing since {day}, his lips look pale.",
            f"Sharp chest pain when I breathe in, started {day}.",
        )
    )
    return w.pick(("Symptoms", "Question", "Not feeling well", "urgent?", "Help")), [body]


def _ambiguous(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            "I have a question about something the doctor mentioned at my last visit. "
            "Who should I ask?",
            f"Following up on my message from {w.pick(WEEKDAYS)}, I haven't heard anything yet.",
            "I got a letter from you in the mail and I don't understand it.",
            "Can someone fill out the form I dropped off? It's for my job.",
            "Is the office open on the holiday?",
            "My neighbor said you have a new location, where is it?",
        )
    )
    return w.pick(("Question", "Following up", "Hello", "Re: your letter", "quick question")), [
        body
    ]


def _spanish_appointment(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            f"Hola, necesito cambiar mi cita del {w.rng.randrange(1, 29)} de "
            f"{w.pick(('marzo', 'abril', 'mayo', 'junio'))}. Gracias.",
            "Buenos días, quisiera hacer una cita para mi hijo con el doctor.",
            f"Hola, necesito cancelar la cita de mañana a las {w.rng.randrange(8, 12)}. Gracias.",
            "Buenas tardes, necesito una cita para un examen físico, por favor.",
        )
    )
    return w.pick(("Cita", "cambio de cita", "Necesito una cita")), [body]


def _spanish_billing(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            f"Hola, recibí una factura de {w.amount()} y no entiendo el cobro. "
            f"Por favor llamar al {w.phone()}.",
            f"Buenos días, tengo una pregunta sobre mi saldo de {w.amount()}. Gracias.",
            f"Hola, me llegó un cobro de {w.amount()} que ya pagué. Necesito ayuda.",
        )
    )
    return w.pick(("Factura", "Pregunta", "cobro")), [body]


def _spanish_callback(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            f"hola, por favor llámeme al {w.spoken_phone()}, gracias.",
            f"Buenas tardes, necesito hablar con alguien, me pueden llamar al {w.phone()}.",
        )
    )
    return "Llamada", [body]


def _spanish_ambiguous(w: _Writer, p: dict) -> tuple[str, list[str]]:
    body = w.pick(
        (
            "Hola, necesito ayuda con un formulario para mi trabajo.",
            "Hola, tengo una pregunta sobre mi última visita. Gracias.",
        )
    )
    return "Pregunta", [body]


SAY: dict[str, Say] = {
    "appointment": _appointment,
    "appointment_unclear": _appointment_unclear,
    "callback": _callback,
    "billing_question": _billing_question,
    "payment_plan": _payment_plan,
    "claim_denial": _claim_denial,
    "claim_appeal": _claim_appeal,
    "records": _records,
    "portal_access": _portal_access,
    "registration": _registration,
    "admission": _admission,
    "eligibility": _eligibility,
    "referral": _referral,
    "prior_auth_question": _prior_auth_question,
    "red_flag": _red_flag,
    "ambiguous": _ambiguous,
    "spanish_appointment": _spanish_appointment,
    "spanish_billing": _spanish_billing,
    "spanish_callback": _spanish_callback,
    "spanish_ambiguous": _spanish_ambiguous,
}
SPANISH = {"spanish_appointment", "spanish_billing", "spanish_callback", "spanish_ambiguous"}
# Voicemails that are not about a patient's own chart: the caller gives no date of birth.
THIRD_PARTY = {"admission", "referral"}


def _portal(w: _Writer, kind: str, p: dict) -> tuple[str, str]:
    subject, sentences = SAY[kind](w, p)
    if kind in SPANISH:
        return subject, " ".join(sentences)
    body = _join(w.opener(), *sentences, w.closer(p["first"]))
    return w.roughen(subject, lower=0.15, typo=0.0), w.roughen(body)


def _voicemail(w: _Writer, kind: str, p: dict) -> tuple[str, str]:
    _, sentences = SAY[kind](w, p)
    dob = p["birth"]
    caller = p["first"] if w.maybe(0.5) else f"{p['first']} {p['last']}"
    if dob.year > 2007:  # a child: a parent calls
        caller = f"{w.first_name()}, calling for {p['first']}, I'm the parent"
    if kind in SPANISH:
        greeting = [w.pick(("hola", "buenos días", "hola buenas")), f"habla {caller}"]
        ending = [w.pick(("gracias", "gracias, adiós", ""))]
    else:
        greeting = [
            w.pick(("hi", "hello", "hi, good morning", "hey", "hello, yes", "hi there")),
            w.pick((f"this is {caller}", f"my name is {caller}", f"it's {caller}")),
        ]
        if kind not in THIRD_PARTY and w.maybe(0.6):
            greeting.append(
                w.pick(
                    (
                        f"date of birth {dob:%m/%d/%Y}",
                        f"my birthday is {MONTHS[dob.month - 1]} {dob.day} {dob.year}",
                        f"DOB {dob:%-m/%-d/%y}",
                    )
                )
            )
        ending = []
        if kind not in ("callback", "ambiguous", "red_flag") and w.maybe(0.45):
            ending.append(
                w.pick(
                    (
                        f"please call me back at {w.spoken_phone()}",
                        f"my number is {w.spoken_phone()}",
                        f"you can reach me at {w.spoken_phone()}",
                    )
                )
            )
        elif kind in ("ambiguous", "red_flag"):
            ending.append(f"my number is {w.spoken_phone()}")
        ending.append(w.pick(("thanks", "thank you, bye", "ok bye", "thanks so much", "")))
    body = w.transcribe([", ".join(greeting), *sentences, *ending])
    minutes, seconds = divmod(w.rng.randrange(9, 150), 60)
    caller_id = p["phone"]
    subject = w.pick(
        (
            f"Voicemail from {caller_id} ({minutes}:{seconds:02d})",
            f"New voicemail: {caller_id}",
            f"VM {caller_id}, {minutes}:{seconds:02d}",
            f"Voicemail ({minutes}m {seconds}s) from {caller_id}",
        )
    )
    return subject, body


# --- Lab results (FHIR) ----------------------------------------------------------------------


def _lab(w: _Writer, kind: str, p: dict) -> tuple[str, str, dict]:
    lab = w.pick(LABS)
    doc = w.doctor()
    qualitative = w.maybe(0.15) and kind != "lab_critical"
    if qualitative:
        test, loinc, normal, abnormal = w.pick(LAB_QUALITATIVE)
        value = normal if kind == "lab_normal" else abnormal
        interpretation = (
            w.pick(("Normal (N)", "Negative", "Within reference range"))
            if kind == "lab_normal"
            else w.pick(("Abnormal (A)", "Positive", "Abnormal"))
        )
        reference = normal
        result = f"Result: {value}"
    else:
        critical_tests = [t for t, v in LAB_TESTS.items() if v[5] is not None or v[6] is not None]
        test = w.pick(critical_tests if kind == "lab_critical" else list(LAB_TESTS))
        loinc, unit, low, high, decimals, crit_low, crit_high = LAB_TESTS[test]
        if kind == "lab_normal":
            number = w.rng.uniform(low + (high - low) * 0.1, high - (high - low) * 0.1)
            interpretation = w.pick(("Normal (N)", "Within reference range", "N", "Normal"))
        elif kind == "lab_abnormal":
            above = w.maybe(0.65) or low == 0
            span = high - low
            number = (
                w.rng.uniform(high + span * 0.05, high + span * 0.4)
                if above
                else w.rng.uniform(max(low - span * 0.3, 0), low - span * 0.03)
            )
            interpretation = w.pick(
                ("High (H)", "H - High", "Abnormal high", "Elevated")
                if above
                else ("Low (L)", "L - Low", "Abnormal low")
            )
        else:
            above = crit_high is not None and (crit_low is None or w.maybe(0.5))
            number = (
                crit_high * w.rng.uniform(1.02, 1.3)
                if above
                else crit_low * w.rng.uniform(0.7, 0.97)
            )
            interpretation = w.pick(
                (
                    "Critical high (HH)" if above else "Critical low (LL)",
                    "CRITICAL VALUE - called to clinic, read-back verified",
                    "Panic value",
                )
            )
        shown = f"{number:.{decimals}f}" if decimals else f"{round(number)}"
        reference = f"{low:g}-{high:g} {unit}".strip()
        result = f"Value: {shown} {unit}".rstrip()
    collected = f"{w.day()} {w.clock()}"
    subject = w.pick(
        {
            "lab_critical": (
                f"CRITICAL result: {test}",
                f"Critical value - {test}",
                f"{lab}: critical {test}",
            ),
            "lab_abnormal": (
                f"Abnormal result: {test}",
                f"Result available: {test}",
                f"{lab}: {test} resulted",
            ),
            "lab_normal": (
                f"Result available: {test}",
                f"New lab result - {test}",
                f"{lab}: {test} resulted",
                f"Final result: {test}",
            ),
        }[kind]
    )
    lines = [
        f"Observation: {test} (LOINC {loinc})",
        result,
        f"Reference range: {reference}",
        f"Interpretation: {interpretation}",
        f"Collected: {collected}",
        f"Performing lab: {lab}",
        f"Ordering provider: {doc}",
        f"Patient: {p['first']} {p['last']}, MRN {p['mrn']}",
    ]
    if kind == "lab_critical":
        lines.append(
            w.pick(
                (
                    "Called to the clinic by the lab; notify the ordering provider now.",
                    f"Phoned to the clinic at {w.clock()}; read-back verified.",
                )
            )
        )
    order = w.pick(((0, 1, 2, 3, 4, 5, 6, 7), (7, 0, 1, 2, 3, 4, 6, 5)))
    body = "\n".join(lines[i] for i in order) + "".join(f"\n{line}" for line in lines[8:])
    return subject, body, {"lab": lab, "source_system": LAB_SYSTEMS[lab]}


# --- Prior-authorization updates (FHIR / API) ------------------------------------------------


def _prior_auth(w: _Writer, kind: str, p: dict) -> tuple[str, str, dict]:
    payer = w.payer(medicare_share=0.25)
    what = w.pick(MEDICATIONS) if w.maybe(0.3) else w.pick(PROCEDURES)
    ref, auth, day, doc = w.ref("REF-"), w.ref("PA"), w.day(), w.doctor()
    status, text = {
        "pa_approved": lambda: (
            "approved",
            w.pick(
                (
                    f"{payer} has approved the request for {what}. Authorization number {auth}, "
                    f"valid from {w.day()} through {day}.",
                    f"Approved: {what}. Auth {auth}. {w.rng.randrange(1, 13)} units approved; "
                    f"valid through {day}.",
                    f"Determination: certified. Service: {what}. Certification number {auth}.",
                )
            ),
        ),
        "pa_received": lambda: (
            "pended",
            w.pick(
                (
                    f"Request received by {payer} on {day}. Status: pending clinical review. "
                    "No action needed at this time.",
                    f"{payer} acknowledges receipt of the request for {what}; in clinical review.",
                    f"Case {ref} opened for {what}. A determination usually takes "
                    f"{w.rng.randrange(2, 15)} business days.",
                )
            ),
        ),
        "pa_info_requested": lambda: (
            "more information needed",
            w.pick(
                (
                    f"{payer} needs additional clinical information for {what}: "
                    f"{w.pick(MISSING_INFO)}. "
                    f"Please submit by {day} or the request will be closed.",
                    f"Documentation due by {day} for {what}: "
                    f"{w.pick(('conservative treatment history', 'failed therapies list'))}.",
                    f"Expedited review opened for {what}; please respond by {day} {w.clock()}.",
                    f"Urgent auth: clinical questionnaire for {what} must be returned; deadline "
                    f"{day}.",
                )
            ),
        ),
        "pa_denied": lambda: (
            "denied",
            w.pick(
                (
                    f"The request for {what} was denied: "
                    f"{w.pick(DENIAL_REASONS)}. "
                    f"The appeal deadline is {day}.",
                    f"Adverse determination for {what}. You may appeal; deadline to file {day}.",
                )
            ),
        ),
        "pa_peer_to_peer": lambda: (
            "peer-to-peer offered",
            w.pick(
                (
                    f"A peer-to-peer review is available for {what}. {doc} may call "
                    f"{w.phone()} before {day} {w.clock()}.",
                    f"Medical director requests a peer-to-peer discussion about {what} with "
                    f"{doc}; schedule by {day}.",
                )
            ),
        ),
        "pa_expiring": lambda: (
            "expiring",
            w.pick(
                (
                    f"Authorization {auth} for {what} expires on {day}; "
                    f"{w.rng.randrange(4, 12)} of 12 visits used. Request an extension if "
                    "treatment continues.",
                    f"Reminder: authorization {auth} ({what}) is expiring {day}.",
                )
            ),
        ),
    }[kind]()
    subject = w.pick(
        (
            f"Prior authorization {status}: {what}",
            f"Auth update - {payer} - {ref}",
            f"{payer}: {status} ({what})",
            f"PA {status}, {ref}",
        )
    )
    body = "\n".join(
        (
            text,
            f"Payer: {payer}",
            f"Member: {p['first']} {p['last']}, MRN {p['mrn']}",
            f"Requesting provider: {doc}",
            f"Reference: {ref}",
        )
    )
    api = w.maybe(0.45)
    channel = "api" if api else "fhir"
    source = w.pick(("availity", "covermymeds")) if api else "epic-payer-platform"
    return subject, body, {"channel": channel, "source_system": source, "payer": payer}


# --- The morning -----------------------------------------------------------------------------


def generate_morning(n: int = 250, seed: int = DEFAULT_SEED) -> list[DemoItem]:
    """`n` inbound requests of one morning, 8:00-12:00, in arrival order. Deterministic."""
    if n < 0:
        raise ValueError("n must be 0 or more")
    w = _Writer(seed)
    plan: list[tuple[str, str]] = []
    for stream, count in mix(n).items():
        kinds = KINDS[stream]
        for (kind, _), k in zip(kinds, split(count, [k for _, k in kinds]), strict=True):
            plan.extend([(stream, kind)] * k)
    w.rng.shuffle(plan)

    drafts = []
    for stream, kind in plan:
        mrn, first, last, birth = w.patient()
        p = {"mrn": mrn, "first": first, "last": last, "birth": birth, "phone": w.phone()}
        queue, type_code, priority = EXPECTED[kind]
        extra: dict = {}
        request_type = source_system = ""
        if stream == "portal":
            channel = "portal"
            subject, body = _portal(w, kind, p)
            source_system = "patient-portal"
        elif stream == "phone":
            channel = "phone"
            subject, body = _voicemail(w, kind, p)
            source_system = "phone-system"
            extra["callback_number"] = p["phone"]
        elif stream == "lab":
            channel, request_type = "fhir", "lab_result"
            subject, body, meta = _lab(w, kind, p)
            source_system = meta.pop("source_system")
            extra.update(meta)
        else:
            request_type = "prior_auth_update"
            subject, body, meta = _prior_auth(w, kind, p)
            channel, source_system = meta.pop("channel"), meta.pop("source_system")
            extra.update(meta)
        # Overnight voicemail is released when the phones open: a rush just after 8:00.
        if stream == "phone" and w.maybe(0.4):
            seconds = w.rng.randrange(0, 20 * 60)
        else:
            seconds = w.rng.randrange(0, MORNING_SECONDS)
        known = stream != "phone"  # a voicemail gives a name and a birth date, not an MRN
        drafts.append(
            {
                "channel": channel,
                "subject": subject[:300],
                "body": body,
                "request_type": request_type,
                "expected_queue": queue,
                "red_flag": kind == "red_flag",
                "ambiguous": queue == "needs-review",
                "expected_type": type_code,
                "expected_priority": priority,
                "kind": kind,
                "source_system": source_system,
                "site": "northgate" if w.maybe(0.2) else "riverside",
                "received_seconds": seconds,
                "patient_mrn": mrn if known else "",
                "patient_name": f"{first} {last}",
                "patient_birth_date": birth,
                "metadata": {"demo": True, **extra},
            }
        )
    drafts.sort(key=lambda d: d["received_seconds"])
    return [DemoItem(external_id=f"demo-{seed}-{i}", **d) for i, d in enumerate(drafts, start=1)]


# --- Pushing it through intake and routing ---------------------------------------------------


@dataclass
class MorningRun:
    items: list[DemoItem]
    tasks: list  # the Task of each item, in the same order
    day: date | None = None
    created: int = 0
    skipped: int = 0  # already loaded by an earlier run (same channel and external id)
    seconds: float = 0.0


@dataclass(frozen=True)
class QueueCount:
    code: str
    name: str
    total: int
    assigned: int
    waiting: int


def submit_morning(
    items: Sequence[DemoItem],
    *,
    day: date | None = None,
    now: datetime | None = None,
    actor: str = DEMO_ACTOR,
) -> MorningRun:
    """Intake, classify, route and assign every item with `routing.services.task_submit_batch`,
    in arrival order, in one transaction. Each is routed at its arrival time on `day`
    (default: today in the clinic's zone) unless `now` fixes one routing time for all (tests).
    Items already loaded (same channel and external id) are not submitted again."""
    from accounts.models import Site
    from queues.models import Task
    from routing.services import task_submit_batch

    started = _time.perf_counter()
    zone = ZoneInfo(CLINIC_ZONE)
    day = day or timezone.now().astimezone(zone).date()
    site_ids = dict(Site.objects.values_list("code", "id"))
    existing = {
        (t.channel, t.external_id): t
        for t in Task.objects.filter(external_id__in=[i.external_id for i in items])
    }
    run = MorningRun(items=list(items), tasks=[], day=day)
    fresh = [i for i in items if (i.channel, i.external_id) not in existing]
    drafts = [
        {
            "now": now or item.received_at(day, CLINIC_ZONE),
            "channel": item.channel,
            "subject": item.subject,
            "body": item.body,
            "external_id": item.external_id,
            "site_id": site_ids.get(item.site),
            "patient_mrn": item.patient_mrn,
            "patient_name": item.patient_name,
            "patient_birth_date": item.patient_birth_date,
            "request_type": item.request_type,
            "source_system": item.source_system,
            "metadata": dict(item.metadata),
            "received_at": item.received_at(day, CLINIC_ZONE),
        }
        for item in fresh
    ]
    created = iter(task_submit_batch(actor=actor, drafts=drafts))
    for item in items:
        task = existing.get((item.channel, item.external_id))
        if task is not None:
            run.skipped += 1
        else:
            task = next(created)
            run.created += 1
        run.tasks.append(task)
    run.seconds = _time.perf_counter() - started
    return run


def queue_counts(run: MorningRun) -> list[QueueCount]:
    """Per queue: the run's tasks there, assigned to someone, and waiting. One query."""
    from queues.models import Task

    rows = (
        Task.objects.filter(pk__in=[t.pk for t in run.tasks])
        .values("queue__code", "queue__name")
        .annotate(
            total=Count("id"),
            assigned=Count("id", filter=Q(assignee__isnull=False)),
            waiting=Count("id", filter=Q(status=Task.Status.QUEUED, assignee__isnull=True)),
        )
        .order_by("-total", "queue__name")
    )
    return [
        QueueCount(
            r["queue__code"] or "",
            r["queue__name"] or "(none)",
            r["total"],
            r["assigned"],
            r["waiting"],
        )
        for r in rows
    ]


def accuracy(run: MorningRun) -> tuple[int, int, list[tuple[DemoItem, str]]]:
    """(items in their expected queue, items, the misses with the queue they went to)."""
    from queues.models import Queue

    codes = dict(Queue.objects.values_list("id", "code"))
    misses = [
        (item, codes.get(task.queue_id, ""))
        for item, task in zip(run.items, run.tasks, strict=True)
        if codes.get(task.queue_id) != item.expected_queue
    ]
    return len(run.items) - len(misses), len(run.items), misses


def red_flag_counts(run: MorningRun) -> tuple[int, int, int]:
    """(red-flag items, those in Clinical triage as P1, those of them assigned to a nurse)."""
    from queues.models import Queue

    triage = Queue.objects.filter(code="triage").values_list("id", flat=True).first()
    flagged = [t for item, t in zip(run.items, run.tasks, strict=True) if item.red_flag]
    in_triage = [t for t in flagged if t.queue_id == triage and t.priority == 1]
    return len(flagged), len(in_triage), sum(1 for t in in_triage if t.assignee_id)


def closed_note(day: date) -> str:
    """A warning when the demo clinic is closed on `day` (its staff then work no shift)."""
    from accounts.models import Site

    site = Site.objects.filter(code="riverside").first()
    if site is None or not site.open_weekdays or day.weekday() in site.open_weekdays:
        return ""
    return (
        f"{day:%A} is not a working day at {site.name}: the day shift is off, so tasks wait "
        "(or go to whoever is on call). Pass --date with a weekday to see a working morning."
    )


def api_intake_payloads(count: int, *, mrn_fallback: str) -> list[dict]:
    """`count` requests of a morning as bodies for `POST /api/v1/intake/` on the API channel,
    for the runs that drive the intake API (benchmarks, fault runs). A request whose patient
    the morning leaves unknown (a caller, a fax) gets an MRN of its own, `<mrn_fallback>-<n>`:
    unknown callers are different people, not one patient with a quarter of the requests."""
    payloads = []
    for n, item in enumerate(generate_morning(count)):
        patient: dict = {"mrn": item.patient_mrn or f"{mrn_fallback}-{n:04}"}
        if item.patient_name and item.patient_birth_date:
            patient.update(name=item.patient_name, birth_date=item.patient_birth_date.isoformat())
        payloads.append(
            {
                "channel": "api",
                "subject": item.subject,
                "body": item.body,
                "request_type": item.request_type,
                "patient": patient,
            }
        )
    return payloads
