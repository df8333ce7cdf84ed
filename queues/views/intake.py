"""The intake pages: the front-desk form, and Failed intake, where supervisors read, correct
and retry what could not become a task.

Both go through the same intake path as every other channel: the payload is stored raw first
(`queues.intake.store.inbound_store`, committed at once), then read by its adapter and handed
to `routing.intake`. Who may see which failed message: `queues.intake.selectors`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Site
from queues.intake import form as form_adapter
from queues.intake import selectors as intake_selectors
from queues.intake import store
from queues.intake.draft import IntakeError
from queues.intake_forms import CorrectionForm, FailedFilterForm, FrontDeskForm
from queues.models import InboundMessage, Queue, Task
from queues.selectors import ROLE_COMPLIANCE, person_name

# The pages are entry points like the API: intake's orchestrating function routes the task,
# links duplicates and spawns follow-ups. The rare upward import, on purpose.
from routing import intake as routing_intake
from routing.selectors import NoActiveRuleSet

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
COUNT_CAP = 1000
# What the detail page shows of a payload, and the largest it lets a person edit.
DISPLAY_BYTES = 64 * 1024
EDIT_BYTES = 512 * 1024
HEX_BYTES = 256
NOT_ROUTED = (
    "Saved as intake message #{id}, but no task was created: {why} A supervisor will find it "
    "under Failed intake."
)


# --- the front-desk form ---------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def intake_new(request):
    _require_worker(request.user)
    if request.method == "GET":
        return render(request, "queues/intake_new.html", {"form": FrontDeskForm()})
    if request.POST.get("refresh"):
        # Without JavaScript, "Show the fields for this type" re-renders with the values kept.
        form = FrontDeskForm(initial=_initial(request.POST))
        return render(request, "queues/intake_new.html", {"form": form})
    form = FrontDeskForm(request.POST)
    if not form.is_valid():
        return render(request, "queues/intake_new.html", {"form": form}, status=400)
    return _submit(request, form)


@login_required
@require_POST
def intake_fields(request):
    """The fields fragment for the chosen type (htmx), with what was typed so far kept. A POST,
    so that patient details never travel in a URL (and its logs)."""
    _require_worker(request.user)
    context = {"form": FrontDeskForm(initial=_initial(request.POST)), "oob": True}
    fragments = [
        render_to_string(f"queues/intake_new.html#{name}", context, request)
        for name in ("intake-fields", "fields-status")
    ]
    return HttpResponse("".join(fragments))


def _submit(request, form: FrontDeskForm):
    user, cleaned = request.user, form.cleaned_data
    payload = form_adapter.payload_for(
        cleaned, entered_by=user.get_username(), site_id=_only_site(user)
    )
    # Stored and committed before anything reads it, as `routing.intake.intake_receive` does;
    # done in two steps here to keep the person as the sender and the message at hand when
    # routing itself cannot run.
    inbound = store.inbound_store(
        channel=cleaned["channel"],
        payload=payload,
        content_type=form_adapter.CONTENT_TYPE,
        sender=user.get_username(),
        headers={"User-Agent": request.headers.get("User-Agent", "")},
        external_id=f"{form_adapter.EXTERNAL_ID_PREFIX}{cleaned['submission_id']}"
        if cleaned.get("submission_id")
        else "",
    )
    try:
        result = routing_intake.intake_process(inbound=inbound, actor=user)
    except NoActiveRuleSet:
        why = "no routing rules are active. Ask a manager to activate a rule set."
        messages.error(request, NOT_ROUTED.format(id=inbound.pk, why=why))
        return render(request, "queues/intake_new.html", {"form": form}, status=503)
    if result is None:
        # Passed the form, failed in intake (the type was switched off meanwhile, say): the
        # message is kept for Failed intake, and the person sees what to fix.
        for name, errors in inbound.error_fields.items():
            form.add_error(name if name in form.fields else None, errors)
        why = "it needs the corrections below."
        messages.error(request, NOT_ROUTED.format(id=inbound.pk, why=why))
        return render(request, "queues/intake_new.html", {"form": form}, status=400)
    task = result.task
    messages.success(request, _outcome_text(result))
    target_id = task.duplicate_of_id or task.pk
    if Task.objects.visible_to(user).filter(pk=target_id).exists():
        return redirect("queues:task", task_id=target_id)
    return redirect("queues:intake_new")


def _outcome_text(result: routing_intake.IntakeResult) -> str:
    task, Status = result.task, InboundMessage.Status
    if result.outcome == Status.RESENT:
        return f"This was already logged as task #{task.pk}; nothing new was created."
    if result.outcome == Status.DUPLICATE:
        return (
            f"Logged as task #{task.pk} and linked to open task #{task.duplicate_of_id}: the "
            "same request is already being worked."
        )
    if result.outcome == Status.REPLY:
        return f"Added to task #{task.pk} as a reply."
    kind = task.task_type.name if task.task_type else "Not classified yet"
    text = f"Logged as task #{task.pk}: {kind}, P{task.priority}"
    queue = task.queue
    if queue is None:
        return f"{text}."
    if queue.kind == Queue.Kind.REVIEW:
        return f"{text}, in {queue.name}: the rules could not tell its type, so a person will."
    if task.assignee is not None:
        return f"{text}, in {queue.name}, assigned to {person_name(task.assignee)}."
    return f"{text}, in {queue.name}, waiting for the next free person."


def _require_worker(user) -> None:
    """Anyone who works a queue logs walk-ins and calls; read-only roles do not."""
    if Group.objects.filter(user=user, name=ROLE_COMPLIANCE).exists():
        raise PermissionDenied("Compliance reviewers can read the work pages but not log requests.")
    if not user.is_superuser and not Queue.objects.workable_by(user).exists():
        raise PermissionDenied("Only staff who work a queue log walk-ins and calls.")


def _initial(data: QueryDict) -> dict:
    return {name: data.get(name) for name in FrontDeskForm.base_fields if data.get(name)}


def _only_site(user) -> int | None:
    """The person's site when they work at exactly one (routing rules may depend on it)."""
    sites = list(Site.objects.filter(staff__user=user).values_list("pk", flat=True)[:2])
    return sites[0] if len(sites) == 1 else None


# --- Failed intake: the list -----------------------------------------------------------------


@login_required
def failed_list(request):
    """Failed and never-parsed messages, newest first, fifty a page by a keyset cursor.

    Failed payloads have no queue, so visibility is by role (`queues.intake.selectors`):
    managers and compliance see all (compliance only reads); a supervisor sees the messages
    of the integration clients serving their departments plus those no department owns (the
    clinic's own form and mailbox, clients outside any department); agents get a 404. Rows
    name the failing fields only, never the messages, which may quote patient data.
    """
    access = _access_or_404(request.user)
    now = timezone.now()
    form = FailedFilterForm(request.GET)
    rows_qs = form.filter_queryset(
        intake_selectors.inbound_visible_to(request.user, access).filter(
            intake_selectors.not_processed(now)
        )
    )
    before = _decode(request.GET.get("before", ""))
    page_qs = rows_qs
    if before is not None:
        moment, pk = before
        page_qs = rows_qs.filter(Q(received_at__lt=moment) | Q(received_at=moment, pk__lt=pk))
    rows = list(
        page_qs.select_related("client")
        .only(
            "id",
            "channel",
            "received_at",
            "status",
            "error_fields",
            "attempts",
            "sender",
            "corrected_at",
            "client__name",
        )
        .order_by("-received_at", "-id")[: PAGE_SIZE + 1]
    )
    filters = urlencode([(k, request.GET[k]) for k in FailedFilterForm.KEYS if request.GET.get(k)])
    older = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        older = "?" + "&".join(p for p in (filters, f"before={_encode(rows[-1])}") if p)
    context = {
        "form": form,
        "rows": [(inbound, _problem(inbound)) for inbound in rows],
        "total": min(total := rows_qs[: COUNT_CAP + 1].count(), COUNT_CAP),
        "total_capped": total > COUNT_CAP,
        "older": older,
        "newest": f"?{filters}" if before is not None else None,
        "access": access,
        "stuck_minutes": int(intake_selectors.STUCK_AFTER.total_seconds() // 60),
        "now": now,
    }
    return render(request, "queues/intake_failed.html", context)


def _problem(inbound: InboundMessage) -> str:
    """What went wrong, by field name only: messages may quote the payload (a patient's name)."""
    if inbound.status == InboundMessage.Status.RECEIVED:
        return "Never parsed: stopped between storing and reading"
    fields = [
        "the whole payload" if name == "non_field_errors" else name
        for name in (inbound.error_fields or {})
    ]
    return "Problem with " + ", ".join(fields) if fields else "Failed"


def _encode(inbound: InboundMessage) -> str:
    raw = f"{inbound.received_at.isoformat()}|{inbound.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str) -> tuple[datetime, int] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        moment, pk = raw.split("|")
        return datetime.fromisoformat(moment), int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


# --- Failed intake: one message --------------------------------------------------------------


@login_required
def failed_detail(request, inbound_id: int):
    access = _access_or_404(request.user)
    inbound = intake_selectors.get_inbound_for_user(request.user, access, inbound_id)
    context = _detail_context(request, access, inbound)
    return render(request, "queues/intake_failed_detail.html", context)


@login_required
@require_POST
def failed_correct(request, inbound_id: int):
    access = _access_or_404(request.user)
    inbound = intake_selectors.get_inbound_for_user(request.user, access, inbound_id)
    _require_act(access)
    if inbound.status != InboundMessage.Status.FAILED:
        messages.error(
            request,
            "Only a failed message can be corrected: retry this one first, as it was received."
            if intake_selectors.is_unprocessed(inbound, timezone.now())
            else "This message already became a task; there is nothing to correct.",
        )
        return redirect("queues:intake_failed_detail", inbound_id=inbound.pk)
    current = inbound.effective_payload
    form = CorrectionForm(request.POST, max_bytes=EDIT_BYTES, current=current)
    if not form.is_valid():
        context = _detail_context(request, access, inbound, correction=form)
        return render(request, "queues/intake_failed_detail.html", context, status=400)
    try:
        store.inbound_correct(
            inbound=inbound, payload=form.cleaned_data["payload"], user=request.user
        )
    except IntakeError as error:
        messages.error(request, error.summary)
        return redirect("queues:intake_failed_detail", inbound_id=inbound.pk)
    logger.info(
        "intake message %s corrected by %s (%d bytes)",
        inbound.pk,
        request.user.get_username(),
        len(form.cleaned_data["payload"]),
    )
    if request.POST.get("then") == "retry":
        return _retry(request, inbound.pk)
    messages.success(request, "Correction saved; the original is kept. Retry to read it again.")
    return redirect("queues:intake_failed_detail", inbound_id=inbound.pk)


@login_required
@require_POST
def failed_retry(request, inbound_id: int):
    access = _access_or_404(request.user)
    inbound = intake_selectors.get_inbound_for_user(request.user, access, inbound_id)
    _require_act(access)
    return _retry(request, inbound.pk)


def _retry(request, inbound_id: int):
    """Read the message again (with its correction) and submit it. The row is locked, so two
    supervisors pressing Retry together cannot make two tasks of it."""
    user, now = request.user, timezone.now()
    try:
        with transaction.atomic():
            inbound = InboundMessage.objects.select_for_update().get(pk=inbound_id)
            if not intake_selectors.is_unprocessed(inbound, now):
                messages.info(request, "This message was already processed; nothing was retried.")
                return redirect("queues:intake_failed_detail", inbound_id=inbound_id)
            result = routing_intake.intake_process(inbound=inbound, actor=user)
    except NoActiveRuleSet:
        messages.error(
            request,
            "Not retried: no routing rules are active. Ask a manager to activate a rule set.",
        )
        return redirect("queues:intake_failed_detail", inbound_id=inbound_id)
    logger.info(
        "intake message %s retried by %s: %s%s",
        inbound_id,
        user.get_username(),
        inbound.status,
        f" (task {result.task.pk})" if result else "",
    )
    if result is None:
        messages.error(request, "Retried, and it failed again: see the errors below.")
    else:
        messages.success(request, f"Became task #{result.task.pk}. {_outcome_text(result)}")
    return redirect("queues:intake_failed_detail", inbound_id=inbound_id)


def _detail_context(
    request,
    access: intake_selectors.IntakeAccess,
    inbound: InboundMessage,
    correction: CorrectionForm | None = None,
) -> dict:
    now = timezone.now()
    unprocessed = intake_selectors.is_unprocessed(inbound, now)
    task_visible = intake_selectors.task_visible(request.user, inbound.task_id)
    # Once a message became a task, its content is the task's: shown to who may see the task.
    show_payload = unprocessed or task_visible
    context = {
        "inbound": inbound,
        "access": access,
        "unprocessed": unprocessed,
        "stuck": unprocessed and inbound.status == InboundMessage.Status.RECEIVED,
        "task_visible": task_visible,
        "show_payload": show_payload,
        "errors": sorted((inbound.error_fields or {}).items()),
        "headers": sorted((inbound.headers or {}).items()),
        "display_kb": DISPLAY_BYTES // 1024,
        "attachments": list(inbound.attachments.only("filename", "content_type", "size"))
        if show_payload
        else [],
    }
    if not show_payload:
        return context
    original = payload_view(bytes(inbound.payload))
    context["original"] = original
    if inbound.corrected_payload is not None:
        context["corrected"] = payload_view(bytes(inbound.corrected_payload))
    current = context.get("corrected", original)
    can_correct = (
        access.may_act
        and inbound.status == InboundMessage.Status.FAILED
        and current["text"] is not None
        and current["encoding"] == "UTF-8"
        and current["size"] <= EDIT_BYTES
    )
    if can_correct:
        context["correction"] = correction or CorrectionForm(
            initial={"payload": bytes(inbound.effective_payload).decode("utf-8")},
            max_bytes=EDIT_BYTES,
        )
    return context


def payload_view(data: bytes) -> dict:
    """A payload for reading: its text when it is text (the start of it when long), else a hex
    preview. The template escapes it like any text: a payload is never rendered as HTML."""
    size = len(data)
    head = data[:DISPLAY_BYTES]
    text, encoding = _as_text(head, cut=size > DISPLAY_BYTES)
    view = {"size": size, "truncated": size > DISPLAY_BYTES, "text": text, "encoding": encoding}
    if text is None:
        view["hex"] = "\n".join(
            f"{offset:08x}  {data[offset : offset + 16].hex(' ')}"
            for offset in range(0, min(size, HEX_BYTES), 16)
        )
    return view


def _as_text(data: bytes, *, cut: bool) -> tuple[str | None, str]:
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError as error:
        # A character cut in two at the display limit is not a reason to call it binary.
        if cut and error.start >= len(data) - 3:
            return data[: error.start].decode("utf-8"), "UTF-8"
    if b"\x00" not in data:
        controls = sum(1 for byte in data if byte < 32 and byte not in (9, 10, 13))
        if controls <= len(data) // 100:
            return data.decode("latin-1"), "Latin-1"
    return None, ""


def _access_or_404(user) -> intake_selectors.IntakeAccess:
    access = intake_selectors.intake_access(user)
    if not access.may_read:
        raise Http404("No such page.")
    return access


def _require_act(access: intake_selectors.IntakeAccess) -> None:
    if not access.may_act:
        raise PermissionDenied(access.read_only_reason or "You can read failed intake only.")
