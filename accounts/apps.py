from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Staff and departments"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        from accounts.signin import on_user_logged_in

        # Every login() stamps its session's sign-in time: the form's sign-in and any other.
        user_logged_in.connect(on_user_logged_in, dispatch_uid="accounts.signed_in_at")
