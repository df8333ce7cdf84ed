"""The list pages' rows and filters are drawn in Python (queues/templatetags/clinicdesk_tasks.py)
for speed; these tests hold them to what the template filters and form widgets they replaced
would have drawn."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.utils import timezone
from django.utils.dateformat import format as date_format

from queues.filters import QueueFilterForm
from queues.models import Task
from queues.templatetags.clinicdesk_tasks import (
    iso_when,
    long_when,
    queue_row,
    select_field,
    short_when,
)
from queues.tests.factories import TaskFactory, TaskTypeFactory


@pytest.mark.parametrize("hour", [0, 1, 11, 12, 13, 23])
def test_times_read_as_the_date_filter_writes_them(hour):
    # Across midnight, noon and a daylight-saving change in the clinic's zone.
    for moment in (
        datetime(2026, 3, 8, hour, 5, tzinfo=UTC),
        datetime(2026, 11, 1, hour, 45, tzinfo=UTC),
        datetime(2026, 12, 31, hour, 0, 30, 123456, tzinfo=UTC),
    ):
        local = timezone.localtime(moment)
        assert short_when(moment) == date_format(local, "M j, g:i A")
        assert long_when(moment) == date_format(local, "D M j, g:i A")
        assert iso_when(moment) == date_format(local, "c")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", ["", "status=on_hold&priority=2&type=fax&sort=age", "status=bogus&priority=9"]
)
def test_filter_selects_match_django_widgets(query):
    TaskTypeFactory(code="fax", name="Fax <inbound>")
    TaskTypeFactory(code="portal", name="Portal message")
    form = QueueFilterForm(dict(part.split("=") for part in query.split("&") if part))
    for name in QueueFilterForm.KEYS:
        ours, django = str(select_field(form[name])), str(form[name])
        assert _options(ours) == _options(django), name
        assert _attributes(ours) == _attributes(django), name
    assert "Fax &lt;inbound&gt;" in str(select_field(form["type"]))


def _attributes(html: str) -> set[str]:
    return set(html.split(">", 1)[0].removeprefix("<select ").split(" "))


def _options(html: str) -> list[str]:
    body = html.removesuffix("</select>").strip().removesuffix("</select>")
    return [part.strip() for part in body.split("<option")[1:]]


@pytest.mark.django_db
def test_row_shows_minimum_patient_data_and_escapes_text():
    task = TaskFactory(
        subject="<script>alert(1)</script> refill",
        patient_name="Maria del Carmen Ortiz",
        patient_mrn="MRN-4471",
        waiting_for_capacity=True,
    )
    now = task.created_at + timedelta(hours=3, minutes=5)
    html = queue_row(task, now=now, supervised=True, sort="updated", sla="")

    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "MDC" in html and "MRN-4471" in html and "Ortiz" not in html
    assert f'href="/tasks/{task.pk}/"' in html
    assert f'value="{task.pk}"' in html  # the supervisor's pick box
    assert "Waiting for capacity" in html and 'class="is-waiting"' in html
    assert "3 h 5 min" in html
    assert f'title="Received {short_when(task.created_at)}"' in html
    assert '<td class="col-updated">' in html


@pytest.mark.django_db
def test_row_for_an_agent_has_no_pick_box_and_partials_still_render():
    task = TaskFactory(patient_name="", patient_mrn="", status=Task.Status.QUEUED)
    html = queue_row(task, now=timezone.now(), supervised=False, sort="priority")
    assert 'name="tasks"' not in html and "col-updated" not in html
    assert '<td class="col-patient"><span class="muted">—</span></td>' in html

    page = Template(
        '{% include "queues/queue.html#age" %}|{% include "queues/queue.html#patient" %}'
    )
    text = page.render(Context({"task": task, "now": task.created_at + timedelta(minutes=2)}))
    assert "2 min</time>" in text and '<span class="muted">—</span>' in text
