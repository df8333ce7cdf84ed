"""The marker that the test factories put in patient fields (names, message bodies), and that
the whole suite checks no log line ever shows (`conftest.py`)."""

PATIENT_CANARY = "Qxcanary"
