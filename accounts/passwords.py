"""Refuse the passwords that breaches of clinics show people choose: a word of the workplace or
the season with digits or symbols around it ("Hospital2024!", "Welcome1", "Nur5e#2024").

Django's CommonPasswordValidator already refuses its offline list of 20,000 common passwords;
this one catches the pattern that the list cannot enumerate, also offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ValidationError

WORDS_FILE = Path(__file__).parent / "data" / "workplace_words.txt"
WORKPLACE_WORDS = frozenset(
    line.strip().lower()
    for line in WORDS_FILE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
AROUND = re.compile(r"^[\W\d_]+|[\W\d_]+$")


def password_core(password: str) -> str:
    """The word left when digits and symbols around it are taken off and look-alikes read
    as letters: "H0spital2024!" → "hospital"."""
    lowered = password.lower()
    core = AROUND.sub("", lowered)
    return AROUND.sub("", core.translate(LEET)) if core else ""


class WorkplacePasswordValidator:
    def __init__(self, extra_words: list[str] | None = None):
        self.words = WORKPLACE_WORDS | {word.lower() for word in extra_words or ()}

    def validate(self, password: str, user=None) -> None:
        core = password_core(password)
        words = set(self.words)
        if user is not None:
            words |= {part.lower() for part in (user.get_username(), user.first_name) if part}
        if core and core in words:
            raise ValidationError(
                "This password is a common word with numbers or symbols added, among the first "
                "that attackers try. Choose a passphrase of several unrelated words.",
                code="password_workplace_word",
            )

    def get_help_text(self) -> str:
        return (
            "Your password cannot be a word of the workplace or the season with numbers or "
            "symbols added."
        )
