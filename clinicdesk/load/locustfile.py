"""A clinic morning for Locust: the staff working their queues in the browser, and the
integrations pushing requests in through the intake API.

`manage.py load` runs it and prepares what it reads; by hand:

    LOAD_PLAN=var/load/<run>/plan.json LOAD_OUT=var/load/<run> \\
        locust -f clinicdesk/load/locustfile.py --headless -u 52 -r 10 -t 10m \\
        --host http://127.0.0.1:8100

The plan (written by `manage.py load`) names the staff logins and their password, the
integration client's token, the intake requests and their rate. One Locust user per person
(`Staff`, a fixed count) and a few `Integration` users that together keep the intake rate.
Every acknowledged intake is appended to `LOAD_OUT/acks.jsonl` for the post-run checks; the
status codes per request, the outcomes of the staff's actions and the answer times of the
steady part of the run (once everyone has signed in) go to `LOAD_OUT/extra.json`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from locust import FastHttpUser, between, constant_throughput, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from clinicdesk.load import pages

REFRESH_SECONDS = 20  # My work's own refresh (queues/views/work.py)
HTMX_REFRESH = {"HX-Request": "true", "HX-Target": "my-work", "X-Idle-Poll": "1"}
HOLD_SHARE = 0.15  # of the tasks opened, put on hold rather than resolved
HOLD_REASONS = (
    "Waiting for the patient to call back",
    "Waiting for the payer's answer",
    "Waiting for records from another provider",
    "Waiting for a provider's signature",
)
OUTCOMES = ("Done", "Patient contacted", "Appointment scheduled", "Records sent")


def _plan() -> dict:
    path = os.environ.get("LOAD_PLAN")
    if not path:
        sys.exit("Set LOAD_PLAN to the plan.json that `manage.py load` writes (see the docstring).")
    return json.loads(Path(path).read_text())


PLAN = _plan()
OUT = Path(os.environ.get("LOAD_OUT") or Path(os.environ["LOAD_PLAN"]).parent)
_logins = itertools.cycle(PLAN["staff"])
_intake = iter(PLAN["intake"])
_acks = (OUT / "acks.jsonl").open("a", buffering=1, encoding="utf-8")
STATUS: dict[str, Counter] = defaultdict(Counter)
ACTIONS: Counter = Counter()
# The steady part of the run: from SETTLE_SECONDS after the last person signed in (sign-in
# hashes passwords on purpose, and 50 of them at once dominate the first minute's tail).
SETTLE_SECONDS = 30
STEADY: dict[str, list[float]] = defaultdict(list)
STEADY_ERRORS: Counter = Counter()
_clock = {"signed_in": 0, "steady_from": None}


@events.request.add_listener
def _count(name, response_time=0, response=None, exception=None, **kwargs):
    code = getattr(response, "status_code", None) or 0
    STATUS[name][str(code)] += 1
    steady_from = _clock["steady_from"]
    if steady_from is not None and time.time() >= steady_from:
        STEADY[name].append(response_time)
        if exception is not None:
            STEADY_ERRORS[name] += 1


@events.quitting.add_listener
def _write_extra(environment, **kwargs):
    steady_from = _clock["steady_from"]
    extra = {
        "status": {name: dict(codes) for name, codes in STATUS.items()},
        "actions": ACTIONS,
        "steady": {
            "seconds": round(time.time() - steady_from, 1) if steady_from else 0,
            "times": STEADY,
            "errors": STEADY_ERRORS,
        },
    }
    (OUT / "extra.json").write_text(json.dumps(extra, sort_keys=True))
    _acks.close()


class Staff(FastHttpUser):
    """A person of the clinic: signs in, then works: My work, Next task when their list is
    empty, the task page, a few seconds of work, then resolve (most) or hold (some)."""

    fixed_count = len(PLAN["staff"])
    wait_time = between(2, 5)

    def on_start(self):
        self.username = next(_logins)
        self.csrf = ""
        self.queues: list[int] = []
        self.page("/accounts/login/", "GET sign-in page")
        with self.client.post(
            "/accounts/login/",
            data={
                "username": self.username,
                "password": PLAN["password"],
                "csrfmiddlewaretoken": self.csrf,
            },
            name="POST sign in",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            signed_in = response.status_code == 302
            if not signed_in:
                response.failure(f"{self.username} could not sign in ({response.status_code})")
        _clock["signed_in"] += 1
        if _clock["signed_in"] == Staff.fixed_count:
            _clock["steady_from"] = time.time() + SETTLE_SECONDS
        if not signed_in:
            return
        self.page(response.headers.get("Location") or "/work/", "GET my work")
        self.queues = pages.queue_ids(self.page("/queues/", "GET queues"))

    @task
    def work(self):
        active, held = pages.my_work_tasks(self.page("/work/", "GET my work"))
        task_id = active[0] if active and random.random() < 0.75 else None
        if task_id is None:
            task_id = self.next_task() or (active[0] if active else None)
        if task_id is None and held and random.random() < 0.2:
            task_id = held[0]  # the answer it waited for came back
        if task_id is None:
            if self.queues and random.random() < 0.3:
                self.page(f"/queues/{random.choice(self.queues)}/", "GET queue page")
            # Nothing for me now: My work refreshes itself (htmx) while I wait.
            time.sleep(random.uniform(REFRESH_SECONDS / 2, REFRESH_SECONDS))
            self.page("/work/", "GET my work (htmx refresh)", headers=HTMX_REFRESH)
            return
        html = self.page(f"/tasks/{task_id}/", "GET task page")
        version = pages.task_version(html)
        if version is None:
            return
        time.sleep(random.uniform(3, 10))  # reading, calling, writing
        if random.random() < HOLD_SHARE and pages.task_offers(html, task_id, "hold"):
            self.act(
                task_id,
                "hold",
                version,
                reason=random.choice(HOLD_REASONS),
                follow_up_at=pages.follow_up_value(datetime.now(UTC)),
            )
        elif pages.task_offers(html, task_id, "resolve"):
            self.act(task_id, "resolve", version, outcome=random.choice(OUTCOMES), note="")
        if self.queues and random.random() < 0.15:
            self.page(f"/queues/{random.choice(self.queues)}/", "GET queue page")

    # --- what a browser does -----------------------------------------------------------------

    def page(self, path: str, name: str, headers: dict | None = None) -> str:
        with self.client.get(
            path, name=name, headers=headers, allow_redirects=False, catch_response=True
        ) as response:
            if response.status_code != 200:
                where = response.headers.get("Location", "") if response.headers else ""
                response.failure(f"{response.status_code} {where}".strip())
                return ""
            html = response.text or ""
        self.csrf = pages.csrf_token(html) or self.csrf
        return html

    def next_task(self) -> int | None:
        with self.client.post(
            "/work/next/",
            data={"csrfmiddlewaretoken": self.csrf},
            name="POST next task",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"{response.status_code}")
                return None
            location = response.headers.get("Location", "")
        task_id = pages.task_id_of(location)
        ACTIONS["next task: claimed" if task_id else "next task: nothing for me"] += 1
        if task_id is None:
            self.page(location, pages.page_name(location))  # the browser lands on My work
        return task_id

    def act(self, task_id: int, action: str, version: int, **fields) -> None:
        with self.client.post(
            f"/tasks/{task_id}/{action}/",
            data={"csrfmiddlewaretoken": self.csrf, "expected_version": version, **fields},
            name=f"POST {action}",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"{response.status_code}")
                return
            location = response.headers.get("Location", "")
        html = self.page(location, pages.page_name(location))
        # A refusal (the task changed meanwhile) is an answer, not an error: count it apart.
        ACTIONS[f"{action}: refused" if pages.shows_error(html) else f"{action}: done"] += 1


class Integration(FastHttpUser):
    """The clinic's portal, phone system, EHR and payer feeds, pushing requests in. Together
    the integration users keep the plan's rate, whatever the answer time."""

    fixed_count = PLAN["intake_users"]
    wait_time = constant_throughput(PLAN["intake_per_hour"] / 3600 / PLAN["intake_users"])

    @task
    def submit(self):
        payload = next(_intake, None)
        if payload is None:
            return  # the plan ran out: the run lasts longer than it was planned for
        with self.client.post(
            "/api/v1/intake/",
            json=payload,
            headers={"Authorization": f"Token {PLAN['token']}"},
            name="POST intake",
            catch_response=True,
        ) as response:
            body = {}
            if response.status_code in (200, 201):
                try:
                    body = json.loads(response.text or "{}")
                except ValueError:
                    response.failure("an answer that is not JSON")
            else:
                response.failure(f"{response.status_code} {(response.text or '')[:200]}")
        _acks.write(
            json.dumps(
                {
                    "channel": payload["channel"],
                    "external_id": payload["external_id"],
                    "status": response.status_code or 0,
                    "id": body.get("id"),
                    "outcome": body.get("outcome"),
                }
            )
            + "\n"
        )
