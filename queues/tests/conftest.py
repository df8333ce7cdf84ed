"""People and queues the page tests share: a billing department with two queues."""

import pytest

from accounts.tests.factories import DepartmentFactory
from queues.tests.factories import QueueFactory


@pytest.fixture
def billing():
    return DepartmentFactory(name="Billing", code="billing")


@pytest.fixture
def claims(billing):
    return QueueFactory(department=billing, name="Claims", code="claims")


@pytest.fixture
def statements(billing):
    return QueueFactory(department=billing, name="Statements", code="statements")
