import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from accounts.models import StaffProfile
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues import services
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def billing():
    department = DepartmentFactory(name="Billing", code="billing")
    queue = QueueFactory(department=department, name="Billing", code="billing")
    return department, queue


@pytest.fixture
def alice(billing):
    return StaffProfileFactory(
        user=UserFactory(username="alice", roles=["Agent"]), departments=[billing[0]], capacity=3
    )


def queued_task(queue, **kwargs):
    return TaskFactory(task_type=TaskTypeFactory(default_queue=queue), **kwargs)


def kinds(task):
    return list(task.events.values_list("kind", flat=True))


def load(profile):
    profile.refresh_from_db()
    return profile.active_load


def test_claim_takes_capacity_and_records_who(billing, alice):
    task = queued_task(billing[1])
    task = services.task_claim(task_id=task.pk, user=alice.user)
    assert task.status == Task.Status.ASSIGNED
    assert task.assignee == alice.user
    assert task.first_claimed_at is not None
    assert load(alice) == 1
    assert kinds(task) == [TaskEvent.Kind.CLAIMED]
    assert task.events.get().actor == alice.user


def test_claim_from_a_queue_i_do_not_work_is_refused(billing):
    outsider = StaffProfileFactory(departments=[DepartmentFactory()]).user
    task = queued_task(billing[1])
    with pytest.raises(PermissionDenied):
        services.task_claim(task_id=task.pk, user=outsider)


def test_claim_at_capacity_is_refused_with_a_clear_message(billing, alice):
    for _ in range(3):
        services.task_claim(task_id=queued_task(billing[1]).pk, user=alice.user)
    task = queued_task(billing[1])
    with pytest.raises(ValidationError, match="at capacity"):
        services.task_claim(task_id=task.pk, user=alice.user)
    assert load(alice) == 3


def test_full_lifecycle_writes_one_event_per_step_and_gives_capacity_back(billing, alice):
    task = queued_task(billing[1])
    services.task_claim(task_id=task.pk, user=alice.user)
    services.task_start(task_id=task.pk, user=alice.user)
    follow_up = timezone.now() + timedelta(days=1)
    task, freed = services.task_hold(
        task_id=task.pk, actor=alice.user, reason="Waiting for payer", follow_up_at=follow_up
    )
    assert task.status == Task.Status.ON_HOLD
    assert freed.user_id == alice.user.pk
    assert load(alice) == 0
    task = services.task_resume(task_id=task.pk, actor=alice.user)
    assert task.status == Task.Status.IN_PROGRESS
    assert load(alice) == 1
    services.task_comment(task_id=task.pk, actor=alice.user, text="Called the payer back")
    task, _ = services.task_resolve(task_id=task.pk, actor=alice.user, outcome="done")
    assert task.status == Task.Status.RESOLVED
    assert load(alice) == 0
    task = services.task_reopen(task_id=task.pk, actor=alice.user, reason="Patient called again")
    assert task.status == Task.Status.QUEUED
    assert task.reopen_count == 1
    assert kinds(task) == [
        "claimed",
        "started",
        "held",
        "resumed",
        "commented",
        "resolved",
        "reopened",
    ]


def test_resume_goes_back_to_the_queue_when_the_holder_has_no_room(billing, alice):
    held = queued_task(billing[1])
    services.task_claim(task_id=held.pk, user=alice.user)
    services.task_hold(task_id=held.pk, actor=alice.user, reason="Docs", follow_up_at=None)
    for _ in range(3):
        services.task_claim(task_id=queued_task(billing[1]).pk, user=alice.user)
    task = services.task_resume(task_id=held.pk, actor="system:follow_up")
    assert task.status == Task.Status.QUEUED
    assert task.assignee is None
    assert load(alice) == 3


def test_a_stale_page_cannot_overwrite_a_newer_change(billing, alice):
    task = queued_task(billing[1])
    seen_version = task.version
    services.task_claim(task_id=task.pk, user=alice.user)
    with pytest.raises(services.StaleTaskError, match="changed by someone else"):
        services.task_release(task_id=task.pk, actor=alice.user, expected_version=seen_version)


def test_an_action_that_does_not_fit_the_state_says_so(billing, alice):
    task = queued_task(billing[1])
    with pytest.raises(services.TaskStateError, match="queued, so it cannot be resolved"):
        services.task_resolve(task_id=task.pk, actor=alice.user, outcome="done")


def test_hold_needs_a_reason(billing, alice):
    task = queued_task(billing[1])
    services.task_claim(task_id=task.pk, user=alice.user)
    with pytest.raises(ValidationError) as error:
        services.task_hold(task_id=task.pk, actor=alice.user, reason=" ", follow_up_at=None)
    assert "reason" in error.value.message_dict


def test_move_counts_a_reroute_and_names_the_rule_that_routed_it(billing, alice):
    other = QueueFactory()
    task = queued_task(billing[1], routed_by_rule_id=7, rule_set_version=3)
    services.task_claim(task_id=task.pk, user=alice.user)
    task, _freed = services.task_move(
        task_id=task.pk, actor=alice.user, to_queue_id=other.pk, reason="Records request"
    )
    assert task.queue == other
    assert task.reroute_count == 1
    assert task.assignee is None
    assert load(alice) == 0
    event = task.events.last()
    assert (event.kind, event.rule_id, event.rule_set_version) == ("rerouted", 7, 3)
    assert (event.from_queue_id, event.to_queue_id) == (billing[1].pk, other.pk)


def test_reassign_to_someone_who_does_not_work_the_queue_is_refused(billing, alice):
    outsider = StaffProfileFactory(departments=[DepartmentFactory()]).user
    task = queued_task(billing[1])
    with pytest.raises(ValidationError) as error:
        services.task_reassign(task_id=task.pk, actor="supervisor", to_user=outsider, reason="x")
    assert "assignee" in error.value.message_dict


def test_a_blocked_task_cannot_be_reassigned_until_its_blocker_is_resolved(billing, alice):
    blocker = queued_task(billing[1])
    blocked = queued_task(billing[1], blocked_by=blocker)
    with pytest.raises(services.TaskStateError, match="resolved first"):
        services.task_reassign(
            task_id=blocked.pk, actor="supervisor", to_user=alice.user, reason="cover"
        )
    assert load(alice) == 0
    assert Task.objects.get(pk=blocked.pk).assignee_id is None


def test_next_task_takes_the_most_urgent_then_the_oldest(billing, alice):
    routine = queued_task(billing[1], priority=3)
    urgent_new = queued_task(billing[1], priority=1)
    queued_task(billing[1], priority=4)
    urgent_old_id = urgent_new.pk
    claimed = services.task_claim_next(user=alice.user)
    assert claimed.pk == urgent_old_id
    claimed = services.task_claim_next(user=alice.user)
    assert claimed.pk == routine.pk
    assert load(alice) == 2


def test_next_task_skips_blocked_tasks_and_other_departments(billing, alice):
    blocker = queued_task(billing[1])
    queued_task(billing[1], blocked_by=blocker)
    queued_task(QueueFactory(), priority=1)
    assert services.task_claim_next(user=alice.user).pk == blocker.pk
    assert services.task_claim_next(user=alice.user) is None


def test_next_task_at_capacity_says_so(billing, alice):
    StaffProfile.objects.filter(pk=alice.pk).update(active_load=3)
    queued_task(billing[1])
    with pytest.raises(ValidationError, match="at capacity"):
        services.task_claim_next(user=alice.user)


@pytest.mark.django_db(transaction=True)
def test_32_people_pressing_next_task_never_share_a_task_or_exceed_capacity():
    department = DepartmentFactory()
    queue = QueueFactory(department=department)
    task_type = TaskTypeFactory(default_queue=queue)
    Task.objects.bulk_create(
        (
            Task(
                channel="portal", task_type=task_type, queue=queue, subject=f"t{i}", status="queued"
            )
            for i in range(2000)
        ),
        batch_size=500,
    )
    people = [StaffProfileFactory(departments=[department], capacity=80).user for _ in range(32)]
    claimed: dict[int, list[int]] = {person.pk: [] for person in people}
    errors = []

    def work(person):
        try:
            while True:
                try:
                    task = services.task_claim_next(user=person)
                except ValidationError:
                    break
                if task is None:
                    break
                claimed[person.pk].append(task.pk)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(person,)) for person in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    all_claimed = [task_id for ids in claimed.values() for task_id in ids]
    assert len(all_claimed) == len(set(all_claimed)) == 2000
    assert not Task.objects.filter(status="queued").exists()
    for person in people:
        profile = StaffProfile.objects.get(user=person)
        assert profile.active_load == len(claimed[person.pk]) <= profile.capacity
    assert TaskEvent.objects.filter(kind="claimed").count() == 2000
