"""The load run's harness without Locust: the clinic it builds, the intake requests it sends,
the pages as its staff read them, the post-run checks (that they pass on a sound database and
fail on each kind of damage), the report table, and stopping a process group."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Department, StaffProfile
from clinicdesk import demo
from clinicdesk.load import checks, clinic, pages, report, runner
from queues import services as queues_services
from queues.models import InboundMessage, Task, TaskEvent
from routing import services as routing_services

User = get_user_model()
STAFF = 7  # one person in each demo department


@pytest.fixture
def load_clinic(db):
    return clinic.build_load_clinic(staff=STAFF)


def submit(token: str, payloads: list[dict]) -> list[dict]:
    """The intake requests through the real API, recorded as the locustfile records them."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    acks = []
    for payload in payloads:
        response = api.post("/api/v1/intake/", payload, format="json")
        body = response.json()
        acks.append(
            {
                "channel": payload["channel"],
                "external_id": payload["external_id"],
                "status": response.status_code,
                "id": body.get("id"),
                "outcome": body.get("outcome"),
            }
        )
    return acks


def failing(results: list[checks.Check]) -> list[str]:
    return [c.name for c in results if not c.ok]


def database_checks(acks: list[dict]) -> list[checks.Check]:
    return [
        checks.check_intake_acknowledged(acks),
        checks.check_nothing_lost(),
        checks.check_single_holder(),
        checks.check_capacity(),
        checks.check_load_matches_tasks(),
    ]


def test_staff_are_spread_over_every_department_by_demand():
    plan = clinic.staffing(50)
    assert sum(plan.values()) == 50
    assert set(plan) == {d["code"] for d in demo.DEPARTMENTS}
    assert min(plan.values()) >= 1
    # Prior authorization and triage (lab results) take most of a demo morning.
    assert plan["prior-auth"] > plan["referrals"] and plan["triage"] > plan["front-desk"]
    assert sum(clinic.staffing(3).values()) == 3


def test_the_load_clinic_has_available_agents_and_keeps_the_demo_people_offline(load_clinic):
    assert len(load_clinic.usernames) == STAFF
    assert load_clinic.staffing == {d["code"]: 1 for d in demo.DEPARTMENTS}
    for username in load_clinic.usernames:
        user = User.objects.get(username=username)
        assert user.check_password(clinic.LOAD_PASSWORD), username
        assert list(user.groups.filter(name="Agent")) and not user.is_staff
        profile = user.staff
        assert profile.availability == StaffProfile.Availability.AVAILABLE
        assert profile.on_shift(timezone.now()) and profile.skills.exists()
        department = Department.objects.get(group__user=user)
        assert username.startswith(department.code)
    demo_people = StaffProfile.objects.filter(user__email__endswith=demo.DEMO_EMAIL_DOMAIN)
    assert demo_people.exists()
    assert not demo_people.exclude(availability=StaffProfile.Availability.OFFLINE).exists()


def test_intake_requests_from_the_demo_morning_become_tasks_and_the_checks_pass(load_clinic):
    payloads = clinic.intake_requests(16, run="t1")
    assert len({p["external_id"] for p in payloads}) == 16
    assert {p["channel"] for p in payloads} >= {"portal", "phone", "fhir"}
    acks = submit(load_clinic.token, payloads)
    assert [a["status"] for a in acks] == [201] * 16, acks

    # People work: Next task, resolve, hold, then a held task resolved.
    agents = User.objects.filter(username__in=load_clinic.usernames)
    for agent in agents:
        task = (
            queues_services.task_claim_next(user=agent)
            or Task.objects.filter(assignee=agent, status__in=Task.LOADED_STATUSES).first()
        )
        if task is None:
            continue
        if task.pk % 3:
            routing_services.task_resolve(task_id=task.pk, actor=agent, outcome="Done")
        else:
            routing_services.task_hold(
                task_id=task.pk,
                actor=agent,
                reason="Waiting for the payer's answer",
                follow_up_at=timezone.now() + timezone.timedelta(days=1),
            )
    assert Task.objects.filter(status=Task.Status.RESOLVED).exists()

    results = database_checks(acks)
    assert failing(results) == [], [c.line for c in results]
    assert results[0].line.startswith("✔ every acknowledged intake has its task: 16 acknowledged")


def test_the_checks_name_each_kind_of_damage(load_clinic):
    acks = submit(load_clinic.token, clinic.intake_requests(6, run="t2"))
    agent = User.objects.get(username=load_clinic.usernames[0])
    other = User.objects.get(username=load_clinic.usernames[1])
    held = Task.objects.filter(status__in=Task.LOADED_STATUSES).first() or (
        queues_services.task_claim_next(user=agent)
    )
    assert held is not None
    holder = User.objects.get(pk=held.assignee_id)
    assert failing(database_checks(acks)) == []

    # An acknowledged request whose task is not there; a stored request never processed.
    forged = [*acks, {**acks[0], "external_id": "load-t2-never-sent", "id": 999_999}]
    InboundMessage.objects.create(channel="api", external_id="stuck", payload=b"{}")
    # A second person given the task while its holder still has it; a load nobody carries.
    queues_services.task_event_record(
        task=held, kind=TaskEvent.Kind.CLAIMED, actor=other, to_user=other
    )
    StaffProfile.objects.filter(user=holder).update(active_load=99, capacity=5)

    results = {c.name: c for c in database_checks(forged)}
    assert failing(list(results.values())) == [
        "every acknowledged intake has its task",
        "no request lost",
        "no task held by two people",
        "nobody over capacity",
        "every load matches its tasks",
    ]
    assert "load-t2-never-sent" in results["every acknowledged intake has its task"].detail
    assert "1 received" in results["no request lost"].detail
    assert (
        f"to {other.pk} while {holder.pk} held it" in results["no task held by two people"].detail
    )
    assert str(holder.pk) in results["nobody over capacity"].detail


def test_server_errors_and_unanswered_requests_fail_the_run():
    assert checks.check_no_server_errors({"GET my work": {"200": 40}, "POST intake": {"201": 9}}).ok
    bad = checks.check_no_server_errors({"GET my work": {"200": 40, "502": 2}, "POST x": {"0": 1}})
    assert not bad.ok
    assert bad.detail == (
        "43 requests, 3 answered 5xx or not at all (GET my work 502: 2, POST x 0: 1)"
    )
    assert not checks.check_no_server_errors({}).ok  # a run that made no request proves nothing


def test_staff_read_the_real_pages(load_clinic, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    [ack] = submit(load_clinic.token, clinic.intake_requests(1, run="t3"))
    task = Task.objects.get(pk=ack["id"])
    if task.assignee_id is None:  # a pull queue: someone who works it takes it
        person = next(
            u
            for u in User.objects.filter(username__in=load_clinic.usernames)
            if queues_services.user_may_work_queue(u, task.queue_id)
        )
        queues_services.task_claim(task_id=task.pk, user=person)
        task.refresh_from_db()
    person = User.objects.get(pk=task.assignee_id)
    browser = Client()

    sign_in = browser.get("/accounts/login/").content.decode()
    assert pages.csrf_token(sign_in)
    browser.force_login(person)
    my_work = browser.get("/work/").content.decode()
    assert pages.my_work_tasks(my_work) == ([task.pk], [])
    refresh = browser.get("/work/", headers={"HX-Request": "true", "X-Idle-Poll": "1"})
    assert pages.my_work_tasks(refresh.content.decode()) == ([task.pk], [])
    page = browser.get(f"/tasks/{task.pk}/").content.decode()
    assert pages.task_version(page) == task.version
    assert pages.task_offers(page, task.pk, "resolve") and pages.task_offers(page, task.pk, "hold")
    assert pages.queue_ids(browser.get("/queues/").content.decode())

    held = browser.post(
        f"/tasks/{task.pk}/hold/",
        {
            "csrfmiddlewaretoken": pages.csrf_token(page),
            "expected_version": task.version,
            "reason": "Waiting for the patient to call back",
            "follow_up_at": pages.follow_up_value(timezone.now()),
        },
    )
    assert pages.task_id_of(held["Location"]) == task.pk
    after = browser.get(held["Location"]).content.decode()
    assert not pages.shows_error(after)
    assert pages.my_work_tasks(browser.get("/work/").content.decode()) == ([], [task.pk])
    # The page it was held on is stale now: a second post is refused, with a message.
    again = browser.post(
        f"/tasks/{task.pk}/resolve/",
        {"expected_version": task.version, "outcome": "Done", "note": ""},
    )
    assert pages.shows_error(browser.get(again["Location"]).content.decode())


STATS = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,\
90%,95%,98%,99%,99.9%,99.99%,100%
GET,GET my work,2294,0,89,210.5,12,5621,20000,18.44,0.0,89,120,200,300,500,1000,2000,3300,5000,\
5600,5621
POST,POST intake,79,1,81,300,15,5809,700,0.64,0.01,81,90,100,110,200,4700,5000,5800,5809,5809,5809
,Aggregated,2373,1,86,220,12,5809,19000,19.08,0.01,86,110,190,290,480,1200,2500,4900,5600,5800,\
5809
"""


def test_the_report_reads_locusts_csv():
    rows = report.parse_stats(STATS)
    assert [r.name for r in rows] == ["GET my work", "POST intake", "All requests"]
    assert (rows[0].requests, rows[0].p50, rows[0].p95, rows[0].p99) == (2294, 89, 1000, 3300)
    assert report.total_errors(rows) == 1
    table = report.format_table(rows).splitlines()
    assert table[0].split() == [
        "page", "/", "endpoint", "requests", "req/s", "p50", "ms", "p95", "ms", "p99", "ms",
        "max", "ms", "errors",
    ]  # fmt: skip
    assert table[2].split() == ["POST", "intake", "79", "0.64", "81", "4700", "5800", "5809", "1"]
    assert report.format_table(rows, markdown=True).splitlines()[1].startswith("| --- |")


def test_stopping_a_group_stops_every_process_in_it(tmp_path):
    pids = tmp_path / "pids"
    script = f"import os, subprocess, time; c = subprocess.Popen(['sleep', '60']); \
open({str(pids)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert runner.group_alive(process.pid)
    # SIGTERM stops the leader; the child it left behind goes with the group's SIGKILL.
    assert runner.stop_group(process, timeout=1) == "SIGKILL"
    assert not runner.group_alive(process.pid)
    assert process.returncode is not None


def test_a_run_needs_a_free_port():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(runner.RunError, match="in use"):
            runner._require_free_port(taken.getsockname()[1])


@pytest.mark.django_db
def test_prepare_refuses_any_database_but_the_load_runs(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    # Its staff share a known password: never outside the database the run creates.
    with pytest.raises(CommandError, match="only in the load run's own database"):
        call_command("load", "--prepare", str(tmp_path), "--intake-items", "3")
    assert not (tmp_path / "plan.json").exists()
    assert not User.objects.filter(email__endswith=clinic.LOAD_EMAIL_DOMAIN).exists()


def test_intake_requests_are_plain_json():
    payloads = clinic.intake_requests(30, run="t4")
    assert json.loads(json.dumps(payloads)) == payloads  # as plan.json carries them
    phone = next(p for p in payloads if p["channel"] == "phone")
    assert "body" not in phone and phone["voicemail"]["transcript"]


def test_the_steady_part_has_its_own_percentiles():
    steady = {
        "seconds": 10,
        "times": {"GET my work": [float(ms) for ms in range(1, 101)], "POST intake": [7.0]},
        "errors": {"POST intake": 1},
    }
    rows = {r.name: r for r in report.steady_rows(steady)}
    work = rows["GET my work"]
    assert (work.requests, work.per_second, work.p50, work.p95, work.p99, work.max) == (
        100, 10.0, 50, 95, 99, 100,
    )  # fmt: skip
    assert (rows["All requests"].requests, rows["All requests"].errors) == (101, 1)
    assert report.steady_rows({}) == []
