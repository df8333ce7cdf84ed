import pytest

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.models import Queue, Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    billing = DepartmentFactory(name="Billing", code="billing")
    triage = DepartmentFactory(name="Clinical triage", code="triage")
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    triage_queue = QueueFactory(department=triage, name="Triage", code="triage")
    billing_task = TaskFactory(task_type=TaskTypeFactory(default_queue=billing_queue))
    triage_task = TaskFactory(task_type=TaskTypeFactory(default_queue=triage_queue))
    return {
        "billing": billing,
        "triage": triage,
        "billing_queue": billing_queue,
        "triage_queue": triage_queue,
        "billing_task": billing_task,
        "triage_task": triage_task,
    }


def test_billing_agent_sees_billing_queue_and_tasks_only(clinic):
    alice = StaffProfileFactory(
        user=UserFactory(username="alice", roles=["Agent"]), departments=[clinic["billing"]]
    ).user
    assert list(Queue.objects.visible_to(alice)) == [clinic["billing_queue"]]
    assert list(Task.objects.visible_to(alice)) == [clinic["billing_task"]]
    assert list(Queue.objects.workable_by(alice)) == [clinic["billing_queue"]]


def test_triage_nurse_sees_triage_only(clinic):
    bob = StaffProfileFactory(
        user=UserFactory(username="bob", roles=["Agent"]), departments=[clinic["triage"]]
    ).user
    assert list(Task.objects.visible_to(bob)) == [clinic["triage_task"]]


def test_member_of_two_departments_sees_both(clinic):
    charlie = StaffProfileFactory(
        user=UserFactory(username="charlie", roles=["Supervisor"]),
        departments=[clinic["billing"], clinic["triage"]],
    ).user
    assert set(Task.objects.visible_to(charlie)) == {
        clinic["billing_task"],
        clinic["triage_task"],
    }


@pytest.mark.parametrize("role", ["Manager", "Compliance"])
def test_managers_and_compliance_see_every_queue(clinic, role):
    user = UserFactory(roles=[role])
    assert set(Queue.objects.visible_to(user)) == {clinic["billing_queue"], clinic["triage_queue"]}
    assert Task.objects.visible_to(user).count() == 2


def test_compliance_may_see_but_not_work_queues(clinic):
    user = UserFactory(roles=["Compliance"])
    assert not Queue.objects.workable_by(user).exists()


def test_a_task_assigned_to_me_stays_visible_after_its_queue_moves(clinic):
    alice = StaffProfileFactory(user=UserFactory(username="alice"), departments=[clinic["billing"]])
    task = clinic["triage_task"]
    Task.objects.filter(pk=task.pk).update(status="assigned", assignee=alice.user)
    assert task in Task.objects.visible_to(alice.user)


def test_inactive_user_sees_nothing(clinic):
    user = StaffProfileFactory(
        user=UserFactory(is_active=False), departments=[clinic["billing"]]
    ).user
    assert not Task.objects.visible_to(user).exists()


def test_leaving_a_department_takes_effect_at_once(clinic):
    from accounts.services import staff_set_departments

    profile = StaffProfileFactory(departments=[clinic["billing"]])
    staff_set_departments(profile=profile, departments=[clinic["triage"]])
    assert list(Task.objects.visible_to(profile.user)) == [clinic["triage_task"]]


def test_visible_to_is_one_query_whatever_the_number_of_queues(clinic, django_assert_num_queries):
    user = StaffProfileFactory(departments=[clinic["billing"], clinic["triage"]]).user
    for _ in range(5):
        QueueFactory(department=clinic["billing"])
    with django_assert_num_queries(1):
        assert len(list(Task.objects.visible_to(user))) == 2


def test_next_task_reads_the_same_workable_queues_as_the_pages(clinic):
    """`workable_queue_ids` is the plain-SQL twin of `Queue.objects.workable_by` that Next task
    uses: department grants, a personal grant, an inactive queue and an inactive person."""
    from guardian.shortcuts import assign_perm

    from queues.services import workable_queue_ids

    extra = QueueFactory(department=clinic["billing"], name="Appeals", code="appeals")
    closed = QueueFactory(department=clinic["billing"], name="Old", code="old", is_active=False)
    alice = StaffProfileFactory(
        user=UserFactory(username="alice", roles=["Agent"]), departments=[clinic["billing"]]
    ).user
    carol = StaffProfileFactory(user=UserFactory(username="carol", roles=["Agent"])).user
    assign_perm("queues.work_queue", carol, clinic["triage_queue"])
    manager = UserFactory(username="mia", roles=["Manager"])
    gone = StaffProfileFactory(
        user=UserFactory(username="gone", is_active=False), departments=[clinic["billing"]]
    ).user

    def orm(user):
        return sorted(
            Queue.objects.workable_by(user).filter(is_active=True).values_list("id", flat=True)
        )

    for user in (alice, carol, manager, gone):
        assert workable_queue_ids(user) == orm(user), user
    assert workable_queue_ids(alice) == sorted([clinic["billing_queue"].pk, extra.pk])
    assert closed.pk not in workable_queue_ids(alice)
    assert workable_queue_ids(carol) == [clinic["triage_queue"].pk]
    assert workable_queue_ids(manager) == []
    assert workable_queue_ids(gone) == []
