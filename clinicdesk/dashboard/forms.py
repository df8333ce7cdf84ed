from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings

PRESETS = (
    ("1", "Last 24 hours"),
    ("7", "Last 7 days"),
    ("30", "Last 30 days"),
    ("90", "Last 90 days"),
    ("custom", "Custom range"),
)
DEFAULT_PRESET = "30"
MAX_CUSTOM_DAYS = 366


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    label: str


class DashboardFilterForm(forms.Form):
    """The period (a preset, or a custom range of whole days in the clinic's time zone, at
    most a year) and the department (empty: every department the person may watch)."""

    period = forms.ChoiceField(choices=PRESETS, required=False, initial=DEFAULT_PRESET)
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"})
    )
    department = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="All my departments"
    )

    def __init__(self, data, *, departments, now: datetime):
        super().__init__(data)
        self.fields["department"].queryset = departments
        self.now = now

    def clean(self):
        cleaned = super().clean()
        preset = cleaned.get("period") or DEFAULT_PRESET
        cleaned["period"] = preset
        if preset != "custom":
            return cleaned
        start, end = cleaned.get("start"), cleaned.get("end")
        today = self.now.astimezone(ZoneInfo(settings.TIME_ZONE)).date()
        if not start or not end:
            raise forms.ValidationError("Choose the first and the last day of the custom range.")
        if start > end:
            raise forms.ValidationError("The first day must come before the last day.")
        if end > today:
            self.add_error("end", "The range cannot end after today.")
        elif (end - start).days + 1 > MAX_CUSTOM_DAYS:
            self.add_error("start", f"Choose at most {MAX_CUSTOM_DAYS} days.")
        return cleaned

    def get_period(self) -> Period:
        """The period asked for; the default one (last 30 days) when the form is invalid."""
        data = self.cleaned_data if self.is_valid() else {"period": DEFAULT_PRESET}
        preset = data.get("period") or DEFAULT_PRESET
        if preset == "custom":
            zone = ZoneInfo(settings.TIME_ZONE)
            start_day: date = data["start"]
            end_day: date = data["end"]
            start = datetime.combine(start_day, time(0), tzinfo=zone)
            end = min(datetime.combine(end_day + timedelta(days=1), time(0), tzinfo=zone), self.now)
            return Period(start, end, f"{start_day:%d %b %Y} to {end_day:%d %b %Y}")
        days = int(preset)
        return Period(self.now - timedelta(days=days), self.now, dict(PRESETS)[preset])
