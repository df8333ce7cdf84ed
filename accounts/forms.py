from django import forms


class CodeForm(forms.Form):
    """A code from the authenticator app or, where `recovery` is allowed, a recovery code."""

    otp_token = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "autocapitalize": "off",
                "spellcheck": "false",
                "autofocus": True,
            }
        ),
    )

    def __init__(self, *args, recovery: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["otp_token"]
        if recovery:
            field.help_text = (
                "The six-digit code your authenticator app shows now, or one of your recovery "
                "codes."
            )
        else:
            field.label = "Code from the app"
            field.help_text = "The six digits the app shows for ClinicDesk."
            field.widget.attrs["inputmode"] = "numeric"
