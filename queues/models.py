from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.models import Department, Site, Skill


class Channel(models.TextChoices):
    PORTAL = "portal", "Patient portal"
    EMAIL = "email", "Email"
    PHONE = "phone", "Phone / voicemail"
    FAX = "fax", "Fax"
    FHIR = "fhir", "EHR (FHIR)"
    API = "api", "API"
    FORM = "form", "Front-desk form"


class Priority(models.IntegerChoices):
    P1 = 1, "P1 urgent"
    P2 = 2, "P2 high"
    P3 = 3, "P3 routine"
    P4 = 4, "P4 low"


class IntakeField(models.TextChoices):
    PATIENT_MRN = "patient_mrn", "Patient MRN"
    PATIENT_NAME = "patient_name", "Patient name"
    PATIENT_BIRTH_DATE = "patient_birth_date", "Patient date of birth"
    CALLBACK_NUMBER = "callback_number", "Callback number"
    PAYER = "payer", "Payer"
    REFERRING_PROVIDER = "referring_provider", "Referring provider"


class TaskType(models.Model):
    """A kind of work in the clinic's catalog, editable by managers."""

    code = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="task_types")
    default_queue = models.ForeignKey(
        "Queue", on_delete=models.PROTECT, related_name="default_for_types"
    )
    default_priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.P3
    )
    capacity_weight = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Units of a person's capacity one task of this type takes.",
    )
    required_fields = ArrayField(
        models.CharField(max_length=40, choices=IntakeField.choices),
        default=list,
        blank=True,
        help_text="Fields the intake form asks for when this type is chosen.",
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_priority__gte=1) & Q(default_priority__lte=4),
                name="tasktype_priority_1_to_4",
            ),
            models.CheckConstraint(
                condition=Q(capacity_weight__gte=1), name="tasktype_weight_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


def _queue_permission_filter(user, codename: str, *, global_perms: bool) -> Q:
    """Rows of Queue on which the user holds `codename`, through their groups (department
    groups get object permissions) or directly; with `global_perms`, a model-wide grant
    (Managers, Compliance) opens every queue. Built as EXISTS subqueries: one SQL query.

    Written against the join tables by id (the user's group ids, the permission's id) rather
    than through `group__user` and `permission__codename`: the same rows with a third of the
    joins, which is most of what PostgreSQL spends planning a page's queries (3.4 → 0.4 ms
    for the queue page's).
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType
    from guardian.models import GroupObjectPermission, UserObjectPermission

    queue_type = ContentType.objects.get_for_model(Queue)  # Django caches it per process
    permission = Permission.objects.filter(content_type=queue_type, codename=codename).values("id")
    groups = get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")
    on_queue = {
        "content_type": queue_type,
        "permission_id__in": permission,
        "object_pk": Cast(OuterRef("pk"), output_field=models.CharField()),
    }
    condition = Exists(
        GroupObjectPermission.objects.filter(group_id__in=groups, **on_queue)
    ) | Exists(UserObjectPermission.objects.filter(user_id=user.pk, **on_queue))
    if global_perms:
        condition |= Exists(
            Group.permissions.through.objects.filter(
                group_id__in=groups, permission_id__in=permission
            )
        ) | Exists(
            get_user_model().user_permissions.through.objects.filter(
                user_id=user.pk, permission_id__in=permission
            )
        )
    return condition


# The queue permission rules as hand-written SQL, for the paths that ask them on every request
# (the queue pages and their 10-second refresh, Next task): the same rules as
# `_queue_permission_filter`, in statements PostgreSQL plans in a fraction of the ORM's time.
# `queue_id` is the SQL of the queue's id in the enclosing query, `user` the placeholder of the
# user's id (each fragment uses it twice); codenames are this module's constants, inlined.
QUEUE_CODENAMES = ("view_queue", "work_queue")


def object_grant_sql(*, queue_id: str, codename: str, user: str = "%s") -> str:
    """EXISTS: the user holds `codename` on the queue, through one of their groups or their
    own (guardian's object permissions)."""
    if codename not in QUEUE_CODENAMES:
        raise ValueError(f"not a queue permission: {codename!r}")
    return f"""(
    EXISTS (SELECT 1 FROM guardian_groupobjectpermission gop
              JOIN auth_user_groups ug ON ug.group_id = gop.group_id
              JOIN auth_permission p ON p.id = gop.permission_id
              JOIN django_content_type ct ON ct.id = p.content_type_id
             WHERE ug.user_id = {user} AND p.codename = '{codename}' AND ct.app_label = 'queues'
               AND ct.model = 'queue' AND gop.object_pk = {queue_id}::text)
 OR EXISTS (SELECT 1 FROM guardian_userobjectpermission uop
              JOIN auth_permission p ON p.id = uop.permission_id
              JOIN django_content_type ct ON ct.id = p.content_type_id
             WHERE uop.user_id = {user} AND p.codename = '{codename}' AND ct.app_label = 'queues'
               AND ct.model = 'queue' AND uop.object_pk = {queue_id}::text))"""


def model_grant_sql(*, codename: str, user: str = "%s") -> str:
    """EXISTS: the user holds `codename` on every queue (a model-wide permission), through one
    of their groups or their own."""
    if codename not in QUEUE_CODENAMES:
        raise ValueError(f"not a queue permission: {codename!r}")
    return f"""(
    EXISTS (SELECT 1 FROM auth_group_permissions gp
              JOIN auth_user_groups ug ON ug.group_id = gp.group_id
              JOIN auth_permission p ON p.id = gp.permission_id
              JOIN django_content_type ct ON ct.id = p.content_type_id
             WHERE ug.user_id = {user} AND p.codename = '{codename}' AND ct.app_label = 'queues')
 OR EXISTS (SELECT 1 FROM auth_user_user_permissions up
              JOIN auth_permission p ON p.id = up.permission_id
              JOIN django_content_type ct ON ct.id = p.content_type_id
             WHERE up.user_id = {user} AND p.codename = '{codename}'
               AND ct.app_label = 'queues'))"""


_OUTER_QUEUE = '"queues_queue"."id"'
_ROLE_SQL = """EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
                WHERE ug.user_id = %s AND g.name = %s)"""


def queue_access_annotations(user, *, roles: tuple[str, ...] = ()) -> dict[str, RawSQL]:
    """Annotations for a query of Queue: `user_may_see`, `user_may_work` and `user_is_<role>`
    (lower-cased) for each role named. See `QueueQuerySet.visible_to`/`workable_by`."""
    # RawSQL below: SQL text built from constants, every value a query parameter.
    uid = user.pk
    if user.is_superuser:
        see, view = "TRUE", []
    else:
        see = (
            f"({object_grant_sql(queue_id=_OUTER_QUEUE, codename='view_queue')}"
            f" OR {model_grant_sql(codename='view_queue')})"
        )
        view = [uid] * 4
    annotations = {
        "user_may_see": RawSQL(see, view, output_field=models.BooleanField()),  # noqa: S611
        "user_may_work": RawSQL(  # noqa: S611
            object_grant_sql(queue_id=_OUTER_QUEUE, codename="work_queue"),
            [uid] * 2,
            output_field=models.BooleanField(),
        ),
    }
    for role in roles:
        annotations[f"user_is_{role.lower()}"] = RawSQL(  # noqa: S611
            _ROLE_SQL, [uid, role], output_field=models.BooleanField()
        )
    return annotations


class QueueQuerySet(models.QuerySet):
    def visible_to(self, user) -> QueueQuerySet:
        """Queues the user may see: object permissions granted to their department groups,
        or every queue for a holder of the model-wide `view_queue` (managers, compliance)."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(_queue_permission_filter(user, "view_queue", global_perms=True))

    def workable_by(self, user) -> QueueQuerySet:
        """Queues whose tasks the user may claim and work: object permissions only."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(_queue_permission_filter(user, "work_queue", global_perms=False))


class Queue(models.Model):
    class Kind(models.TextChoices):
        WORK = "work", "Work"
        HOLDING = "holding", "Holding"
        REVIEW = "review", "Needs review"
        ESCALATION = "escalation", "Escalation"

    class Policy(models.TextChoices):
        PUSH_LEAST_LOADED = "push_least_loaded", "Push to the least loaded"
        PUSH_ROUND_ROBIN = "push_round_robin", "Push round-robin"
        PULL_ONLY = "pull_only", "Pull only (Next task)"

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="queues")
    name = models.CharField(max_length=120)
    code = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.WORK)
    assignment_policy = models.CharField(
        max_length=20, choices=Policy.choices, default=Policy.PUSH_LEAST_LOADED
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = QueueQuerySet.as_manager()

    class Meta:
        ordering = ["department__name", "name"]
        permissions = [("work_queue", "Can claim and work the queue's tasks")]
        constraints = [
            models.UniqueConstraint(fields=["department", "name"], name="queue_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user) -> TaskQuerySet:
        """Tasks the user may see: those in queues they may see, and their own. One query."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        visible_queues = Queue.objects.visible_to(user).values("id")
        return self.filter(Q(queue__in=visible_queues) | Q(assignee=user))

    def open(self) -> TaskQuerySet:
        return self.filter(status__in=Task.OPEN_STATUSES)


class Task(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        QUEUED = "queued", "Queued"
        ASSIGNED = "assigned", "Assigned"
        IN_PROGRESS = "in_progress", "In progress"
        ON_HOLD = "on_hold", "On hold"
        RESOLVED = "resolved", "Resolved"
        DUPLICATE = "duplicate", "Duplicate"

    # The statuses in which a task holds `weight` units of its assignee's capacity.
    LOADED_STATUSES = (Status.ASSIGNED, Status.IN_PROGRESS)
    OPEN_STATUSES = (
        Status.NEW,
        Status.QUEUED,
        Status.ASSIGNED,
        Status.IN_PROGRESS,
        Status.ON_HOLD,
    )

    channel = models.CharField(max_length=10, choices=Channel.choices)
    external_id = models.CharField(
        max_length=200, blank=True, help_text="The sending system's id; unique per channel."
    )
    site = models.ForeignKey(
        Site,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="tasks",
        db_index=False,
    )
    task_type = models.ForeignKey(
        TaskType, on_delete=models.PROTECT, null=True, blank=True, related_name="tasks"
    )
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.P3)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.NEW)
    queue = models.ForeignKey(
        Queue, on_delete=models.PROTECT, null=True, blank=True, related_name="tasks"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assigned_tasks",
        db_index=False,
    )
    weight = models.PositiveSmallIntegerField(
        default=1,
        editable=False,
        help_text="Capacity units the task takes while assigned or in progress (from its type).",
    )
    required_skill = models.ForeignKey(
        Skill,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    min_skill_level = models.PositiveSmallIntegerField(default=1)
    waiting_for_capacity = models.BooleanField(default=False)

    patient_mrn = models.CharField("patient MRN", max_length=40, blank=True)
    patient_name = models.CharField(max_length=200, blank=True)
    patient_birth_date = models.DateField(null=True, blank=True)

    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    request_type = models.CharField(max_length=60, blank=True)
    source_system = models.CharField(max_length=80, blank=True)
    tags = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    received_at = models.DateTimeField(null=True, blank=True)
    first_assigned_at = models.DateTimeField(null=True, blank=True)
    first_claimed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    claim_due_at = models.DateTimeField(null=True, blank=True)
    resolve_due_at = models.DateTimeField(null=True, blank=True)
    hold_reason = models.CharField(max_length=200, blank=True)
    follow_up_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=60, blank=True)

    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        db_index=False,
    )
    duplicate_of = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="duplicates",
        db_index=False,
    )
    blocked_by = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="blocking",
        db_index=False,
    )
    rule_set_version = models.PositiveIntegerField(null=True, blank=True)
    routed_by_rule_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="The routing rule that first routed the task."
    )
    reroute_count = models.PositiveSmallIntegerField(default=0)
    reopen_count = models.PositiveSmallIntegerField(default=0)
    version = models.PositiveIntegerField(
        default=1, help_text="Raised by every change, so that a stale page cannot overwrite."
    )
    sla_version = models.PositiveIntegerField(
        default=0,
        db_default=0,
        editable=False,
        help_text="The version the SLA clock was last computed from; behind `version` while "
        "the escalation sweep has a change of this task still to look at.",
    )

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=1) & Q(priority__lte=4), name="task_priority_1_to_4"
            ),
            models.UniqueConstraint(
                fields=["channel", "external_id"],
                condition=~Q(external_id=""),
                name="task_unique_external_id_per_channel",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["assigned", "in_progress"], assignee__isnull=False)
                | ~Q(status__in=["assigned", "in_progress"]),
                name="task_assigned_has_assignee",
            ),
        ]
        indexes = [
            # Next task: the claimable rows in the exact order they are claimed.
            models.Index(
                fields=["priority", "claim_due_at", "id"],
                condition=Q(status="queued", assignee__isnull=True),
                name="task_claimable",
            ),
            # Next task for someone who works a single queue: the same order within it.
            models.Index(
                fields=["queue", "priority", "claim_due_at", "id"],
                condition=Q(status="queued", assignee__isnull=True),
                name="task_claimable_by_queue",
            ),
            models.Index(
                fields=["queue", "priority", "created_at"],
                condition=Q(status__in=["new", "queued", "assigned", "in_progress", "on_hold"]),
                name="task_open_by_queue",
            ),
            models.Index(
                fields=["assignee", "status"],
                condition=Q(assignee__isnull=False),
                name="task_by_assignee",
            ),
            models.Index(
                fields=["patient_mrn"], condition=~Q(patient_mrn=""), name="task_by_patient"
            ),
            # Dedup by conversation thread: the open tasks of an email thread or EHR chain.
            models.Index(
                KeyTransform("thread_key", "metadata"),
                condition=Q(status__in=["new", "queued", "assigned", "in_progress", "on_hold"]),
                name="task_open_by_thread",
            ),
            # A period of tasks by creation (dedup windows, the dashboard): the columns the
            # dashboard's measures read are carried in the index, so a 30-day scan over a
            # million tasks reads the index alone.
            models.Index(
                fields=["created_at"],
                include=[
                    "id",
                    "queue",
                    "status",
                    "priority",
                    "task_type",
                    "reroute_count",
                    "reopen_count",
                    "first_assigned_at",
                    "first_claimed_at",
                    "blocked_by",
                    "claim_due_at",
                    "resolve_due_at",
                    "resolved_at",
                ],
                name="task_dashboard_period",
            ),
            # The API's task list, which integrations page through by last change.
            models.Index(fields=["updated_at", "id"], name="task_by_update"),
            # Foreign keys that most tasks leave empty: indexed only where set, so that the
            # many updates of a task's life do not maintain entries for NULLs. (The assignee
            # is covered by `task_by_assignee`.)
            *(
                models.Index(
                    fields=[field], condition=Q(**{f"{field}__isnull": False}), name=f"task_{field}"
                )
                for field in ("site", "required_skill", "parent", "duplicate_of", "blocked_by")
            ),
            # The escalation sweep's changed tasks: open rows whose SLA lags their version.
            # Empty when nothing changed, so an idle sweep reads nothing whatever the size.
            models.Index(
                fields=["id"],
                condition=Q(status__in=["new", "queued", "assigned", "in_progress", "on_hold"])
                & ~Q(sla_version=models.F("version")),
                name="task_sla_stale",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def patient_initials(self) -> str:
        return "".join(part[0].upper() for part in self.patient_name.split() if part)[:3]


class TaskEvent(models.Model):
    """One step of a task's timeline. Append-only: a database trigger refuses UPDATE and
    DELETE, so the history cannot be rewritten, whatever the code does."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        CLASSIFIED = "classified", "Classified"
        ROUTED = "routed", "Routed"
        ASSIGNED = "assigned", "Assigned"
        WAITING_FOR_CAPACITY = "waiting", "Waiting for capacity"
        CLAIMED = "claimed", "Claimed"
        STARTED = "started", "Started"
        HELD = "held", "Put on hold"
        RESUMED = "resumed", "Resumed"
        RESOLVED = "resolved", "Resolved"
        REOPENED = "reopened", "Reopened"
        REROUTED = "rerouted", "Rerouted"
        REASSIGNED = "reassigned", "Reassigned"
        RELEASED = "released", "Released"
        COMMENTED = "commented", "Comment"
        RECLASSIFIED = "reclassified", "Reclassified"
        PRIORITY_CHANGED = "priority", "Priority changed"
        ESCALATED = "escalated", "Escalated"
        DUPLICATE_LINKED = "duplicate", "Duplicate linked"
        SPAWNED = "spawned", "Follow-up created"
        UNBLOCKED = "unblocked", "Unblocked"

    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="events", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    actor_label = models.CharField(
        max_length=120, help_text="Who acted: a username, client:<name> or system:<job>."
    )
    from_queue = models.ForeignKey(
        Queue,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    to_queue = models.ForeignKey(
        Queue,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    from_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    to_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    rule_id = models.PositiveIntegerField(null=True, blank=True)
    rule_set_version = models.PositiveIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    explanation = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # A task's timeline (and its events' foreign key: `task` has no index of its own).
            models.Index(fields=["task", "created_at", "id"], name="taskevent_timeline"),
            # A period's events of one kind (holds, reroutes) for the dashboard.
            models.Index(fields=["kind", "created_at"], name="taskevent_by_kind"),
            # Who acted, and the queues and people an event names: indexed only where set.
            *(
                models.Index(
                    fields=[field],
                    condition=Q(**{f"{field}__isnull": False}),
                    name=f"taskevent_{field}",
                )
                for field in ("actor", "from_queue", "to_queue", "from_user", "to_user")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.actor_label}"


class IntegrationClient(models.Model):
    """Another system that pushes requests in (an EHR, an email gateway, a phone system).

    Only hashes are stored: the SHA-256 of the API token, and the SHA-256 of the signing
    secret. The secret handed out is longer than SHA-256's block, so HMAC-SHA256 itself keys
    with its hash (RFC 2104): the stored hash verifies exactly what the client signs.
    The client reads and acts as its service user, whose department groups decide what it sees.
    """

    name = models.SlugField(max_length=60, unique=True)
    description = models.CharField(max_length=200, blank=True)
    channels = ArrayField(
        models.CharField(max_length=10, choices=Channel.choices),
        help_text="The channels this client may submit on.",
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="integration_client",
        help_text="The service account the client reads as; never logs in to the pages.",
    )
    token_prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    signing_key = models.BinaryField(max_length=32, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def actor_label(self) -> str:
        return f"client:{self.name}"


class InboundMessage(models.Model):
    """A payload exactly as it arrived, stored before parsing so that nothing is lost."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PARSED = "parsed", "Became a task"
        RESENT = "resent", "Resend of a request already received"
        DUPLICATE = "duplicate", "Linked to an open task as a duplicate"
        REPLY = "reply", "Added to its task as a reply"
        FAILED = "failed", "Failed"

    channel = models.CharField(max_length=10, choices=Channel.choices)
    external_id = models.CharField(max_length=200, blank=True)
    client = models.ForeignKey(
        IntegrationClient,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="inbound_messages",
    )
    sender = models.CharField(
        max_length=120, blank=True, help_text="The integration client or person that sent it."
    )
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    content_type = models.CharField(max_length=100, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    payload = models.BinaryField()
    corrected_payload = models.BinaryField(
        null=True, blank=True, help_text="A supervisor's correction; the original is kept as is."
    )
    corrected_by = models.CharField(max_length=150, blank=True)
    corrected_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    error_fields = models.JSONField(
        default=dict, blank=True, help_text="Per field, what was wrong and how to fix it."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    task = models.ForeignKey(
        Task, on_delete=models.PROTECT, null=True, blank=True, related_name="inbound_messages"
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="parts",
        help_text="The message this one was split from (an entry of a FHIR Bundle).",
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(
                fields=["received_at"], condition=Q(status="failed"), name="inbound_failed"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} message {self.pk} ({self.get_status_display()})"

    @property
    def effective_payload(self) -> bytes:
        """What parsing reads: the correction when there is one, else the original."""
        data = self.corrected_payload if self.corrected_payload is not None else self.payload
        return bytes(data)


def attachment_path(instance: Attachment, filename: str) -> str:
    # A random name on disk: the original name (which may carry a patient's name) stays in
    # the database, readable only through the permission-checked download view.
    return f"attachments/{instance.created_at:%Y/%m}/{instance.sha256[:2]}/{uuid.uuid4().hex}"


class Attachment(models.Model):
    """A file that came with a request (an email attachment, a fax PDF, a voicemail's audio)."""

    task = models.ForeignKey(
        Task, on_delete=models.PROTECT, null=True, blank=True, related_name="attachments"
    )
    inbound = models.ForeignKey(
        InboundMessage,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="attachments",
    )
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=attachment_path, max_length=255)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.filename


class EmergencyAccessQuerySet(models.QuerySet):
    def active(self, now=None) -> EmergencyAccessQuerySet:
        """Grants still running: a task was found, and the time has not run out."""
        return self.filter(task__isnull=False, expires_at__gt=now or timezone.now())


class EmergencyAccess(models.Model):
    """A person's request to read a task outside their departments ("break the glass"), with
    the reason they gave. When the number names a task they could not see, the row is a grant:
    read-only, until `expires_at`. A number that names no task is kept too (`task` empty), so
    that probing numbers leaves the same trace as opening them.

    The evidence of record is the append-only `AuditEvent` written in the same transaction;
    this row is what the task page checks, and `alerted_at` is the compliance alert's claim."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="emergency_accesses"
    )
    task = models.ForeignKey(
        Task,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="emergency_accesses",
        help_text="Empty when no task has the number asked for.",
    )
    task_number = models.BigIntegerField(help_text="The task number the person typed.")
    reason = models.TextField()
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    alerted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the compliance reviewers were emailed."
    )

    objects = EmergencyAccessQuerySet.as_manager()

    class Meta:
        ordering = ["-granted_at", "-id"]
        verbose_name = "emergency access"
        verbose_name_plural = "emergency accesses"
        indexes = [
            models.Index(fields=["user", "task", "expires_at"], name="emergency_by_user_task"),
            models.Index(fields=["granted_at", "id"], name="emergency_by_time"),
        ]

    def __str__(self) -> str:
        return f"Emergency access to task #{self.task_number} by {self.user_id}"

    def is_active(self, now=None) -> bool:
        return self.task_id is not None and self.expires_at > (now or timezone.now())
