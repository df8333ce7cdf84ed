import factory
from django.db import connection
from faker import Faker

from accounts.tests.factories import DepartmentFactory
from clinicdesk.tests.canary_marker import PATIENT_CANARY
from queues.models import Channel, InboundMessage, Queue, Task, TaskEvent, TaskType
from queues.services import queue_sync_permissions


class QueueFactory(factory.django.DjangoModelFactory):
    """A queue whose department may see and work it, as the admin sets it up."""

    class Meta:
        model = Queue
        skip_postgeneration_save = True

    department = factory.SubFactory(DepartmentFactory)
    name = factory.Sequence(lambda n: f"Queue {n}")
    code = factory.Sequence(lambda n: f"queue-{n}")
    kind = Queue.Kind.WORK
    assignment_policy = Queue.Policy.PUSH_LEAST_LOADED

    @factory.post_generation
    def grant(self, create, extracted, **kwargs):
        if create and extracted is not False:
            queue_sync_permissions(queue=self)


class TaskTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaskType
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"type-{n}")
    name = factory.LazyAttribute(lambda t: t.code.replace("-", " ").title())
    default_queue = factory.SubFactory(QueueFactory)
    department = factory.SelfAttribute("default_queue.department")
    default_priority = 3
    capacity_weight = 1


_fake = Faker()


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    channel = Channel.PORTAL
    task_type = factory.SubFactory(TaskTypeFactory)
    queue = factory.SelfAttribute("task_type.default_queue")
    priority = 3
    status = Task.Status.QUEUED
    subject = factory.Faker("sentence", nb_words=6)
    # Patient data carries the suite-wide canary (conftest.py): no log line of any test may
    # show it.
    body = factory.LazyFunction(lambda: f"{_fake.paragraph()} {PATIENT_CANARY}")
    patient_mrn = factory.Sequence(lambda n: f"MRN{100000 + n}")
    patient_name = factory.LazyFunction(lambda: f"{_fake.name()} {PATIENT_CANARY}")


class TaskEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaskEvent

    task = factory.SubFactory(TaskFactory)
    kind = TaskEvent.Kind.CREATED
    actor_label = "system:test"


class InboundMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InboundMessage

    channel = Channel.API
    payload = b'{"subject": "Refill request"}'
    content_type = "application/json"


def closed_tasks(
    queue: Queue,
    count: int,
    *,
    status: str = "resolved",
    assignee_id: int | None = None,
    patient_prefix: str = "",
) -> None:
    """`count` resolved tasks (or of another `status`, for `assignee_id`) in one INSERT …
    SELECT, older than any open one (with `patient_prefix`, each for a patient of its own,
    "<prefix><n>"): the bulk of a real table,
    which a plan test needs before the statistics make the planner choose as it would on a
    million rows."""
    task_type = TaskTypeFactory(default_queue=queue)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO queues_task (
                channel, external_id, priority, status, weight, min_skill_level,
                waiting_for_capacity, patient_mrn, patient_name, subject, body, request_type,
                source_system, tags, metadata, created_at, updated_at, resolved_at,
                claim_due_at, hold_reason, outcome, reroute_count, reopen_count, version,
                queue_id, task_type_id, assignee_id)
            SELECT 'portal', '', 1 + mod(i, 4), %(status)s::text, 1, 1, false,
                   CASE WHEN %(prefix)s::text = '' THEN '' ELSE %(prefix)s::text || i END, '',
                   'bulk ' || i, '', '', '', '{}', '{}',
                   now() - interval '30 days' + i * interval '1 minute', now(),
                   CASE WHEN %(status)s::text = 'resolved' THEN now() END,
                   now() - interval '30 days' + i * interval '1 minute', '',
                   CASE WHEN %(status)s::text = 'resolved' THEN 'done' ELSE '' END, 0, 0, 1,
                   %(queue)s, %(type)s, %(assignee)s
              FROM generate_series(1, %(count)s) AS i
            """,
            {
                "status": status,
                "queue": queue.pk,
                "type": task_type.pk,
                "count": count,
                "assignee": assignee_id,
                "prefix": patient_prefix,
            },
        )
