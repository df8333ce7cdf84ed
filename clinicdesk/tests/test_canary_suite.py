"""The suite-wide canary (conftest.py) notices a log line that shows patient data."""

import logging

import conftest
from clinicdesk.tests.canary_marker import PATIENT_CANARY
from queues.tests.factories import TaskFactory


def test_factory_patient_fields_carry_the_canary():
    task = TaskFactory.build()
    assert PATIENT_CANARY in task.patient_name
    assert PATIENT_CANARY in task.body


def test_a_log_line_with_patient_data_is_noticed():
    before = len(conftest._canary.leaks)
    logging.getLogger("clinicdesk.example").warning("could not parse %s", PATIENT_CANARY)
    try:
        assert len(conftest._canary.leaks) == before + 1
        assert "clinicdesk.example WARNING" in conftest._canary.leaks[-1]
    finally:
        del conftest._canary.leaks[before:]
