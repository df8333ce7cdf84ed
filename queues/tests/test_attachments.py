"""A task's files on its page, downloaded only by those who may see the task; an email's HTML
shown cleaned and sandboxed."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from queues.intake.draft import AttachmentDraft
from queues.intake.store import attachments_store
from queues.models import Attachment, Task
from queues.tests.inbound_support import build_intake_clinic
from routing.intake import intake_receive

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).parent / "email_corpus"


@pytest.fixture
def clinic():
    return build_intake_clinic()


def from_email(name: str) -> Task:
    _, result = intake_receive(
        channel="email",
        payload=(CORPUS / name).read_bytes(),
        content_type="message/rfc822",
        actor="system:email",
    )
    return result.task


def download_url(task: Task, attachment: Attachment) -> str:
    return reverse("queues:task_attachment", args=[task.pk, attachment.pk])


def test_a_member_of_the_queue_downloads_the_file_as_an_attachment(client, clinic):
    task = from_email("02_attachments_pdf_image.eml")  # a claim denial: Billing
    pdf = task.attachments.get(filename="EOB-77812.pdf")
    client.force_login(clinic["alice"])
    response = client.get(download_url(task, pdf))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="EOB-77812.pdf"'
    assert response["Content-Type"] == "application/pdf"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content).startswith(b"%PDF-1.4")


def test_someone_of_another_department_gets_404(client, clinic):
    task = from_email("02_attachments_pdf_image.eml")
    pdf = task.attachments.get(filename="EOB-77812.pdf")
    client.force_login(clinic["frank"])  # front desk, not billing
    assert client.get(download_url(task, pdf)).status_code == 404
    assert client.get(reverse("queues:task", args=[task.pk])).status_code == 404


def test_a_file_of_another_task_is_not_reachable_through_a_visible_task(client, clinic):
    visible = from_email("07_no_subject.eml")  # no request type: Needs review (front desk)
    hidden = from_email("02_attachments_pdf_image.eml")  # billing's
    pdf = hidden.attachments.get(filename="EOB-77812.pdf")
    client.force_login(clinic["frank"])
    assert client.get(reverse("queues:task", args=[visible.pk])).status_code == 200
    assert client.get(download_url(visible, pdf)).status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, clinic):
    task = from_email("02_attachments_pdf_image.eml")
    response = client.get(download_url(task, task.attachments.first()))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_html_and_svg_files_are_served_as_bytes_never_as_a_page(client, clinic):
    task = from_email("02_attachments_pdf_image.eml")
    stored = attachments_store(
        drafts=[
            AttachmentDraft("page.html", "text/html", b"<script>alert(1)</script>"),
            AttachmentDraft("logo.svg", "image/svg+xml; charset=utf-8", b"<svg onload=x/>"),
        ],
        task=task,
        inbound=None,
    )
    client.force_login(clinic["alice"])
    for attachment in stored:
        response = client.get(download_url(task, attachment))
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment;")


def test_the_task_page_lists_the_files_with_type_and_size(client, clinic):
    task = from_email("02_attachments_pdf_image.eml")
    client.force_login(clinic["alice"])
    page = client.get(reverse("queues:task", args=[task.pk])).content.decode()
    assert "2 files" in page
    for attachment in task.attachments.all():
        assert f'href="{download_url(task, attachment)}"' in page
        assert attachment.filename in page
    assert "application/pdf · 69\xa0bytes" in html.unescape(page)


def test_an_email_html_body_is_shown_cleaned_in_a_sandboxed_frame(client, clinic):
    task = from_email("09_html_only_script.eml")
    client.force_login(clinic["frank"])
    page = client.get(reverse("queues:task", args=[task.pk])).content.decode()
    frame = page[page.index("<iframe") : page.index("</iframe>")]
    assert "sandbox" in frame.split(">")[0]
    assert "allow-scripts" not in frame and "allow-same-origin" not in frame
    srcdoc = html.unescape(frame.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert "<h1>Message from your patient</h1>" in srcdoc
    assert "<script" not in srcdoc and "onload" not in srcdoc and "tracker.example" not in srcdoc
    # the markup is escaped inside the attribute: nothing of it is live in the page itself
    assert "<h1>Message from your patient</h1>" not in page
    assert "<script>document.location" not in page


def test_html_put_into_metadata_by_other_means_is_still_only_shown_sandboxed(client, clinic):
    task = from_email("07_no_subject.eml")
    Task.objects.filter(pk=task.pk).update(
        metadata={"html_body": '<script>alert("x")</script><b onmouseover="y">hi</b>'}
    )
    client.force_login(clinic["frank"])
    page = client.get(reverse("queues:task", args=[task.pk])).content.decode()
    assert '<script>alert("x")</script>' not in page
    assert "&lt;script&gt;" in page  # inert text inside the sandboxed frame's srcdoc


def test_the_page_costs_one_query_for_files_however_many(client, clinic):
    plain = from_email("07_no_subject.eml")
    one = from_email("15_rfc2231_filename.eml")
    many = from_email("18_outlook_related.eml")
    attachments_store(
        drafts=[AttachmentDraft(f"extra-{n}.pdf", "application/pdf", b"%PDF") for n in range(5)],
        task=many,
        inbound=None,
    )
    client.force_login(clinic["frank"])

    def queries(task: Task) -> int:
        client.get(reverse("queues:task", args=[task.pk]))  # the session's first touch
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("queues:task", args=[task.pk])).status_code == 200
        return len(captured.captured_queries)

    assert (
        Task.objects.filter(
            pk__in=[plain.pk, one.pk, many.pk], queue__department__code="front-desk"
        )
        .distinct()
        .count()
        == 3
    )
    without = queries(plain)
    assert queries(one) == without + 1
    assert queries(many) == without + 1
