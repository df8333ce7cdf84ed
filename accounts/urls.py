from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/code/", views.signin_code, name="signin_code"),
    path("login/set-up/", views.signin_setup, name="signin_setup"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keepalive/", views.keepalive, name="keepalive"),
    path("recovery-codes/", views.recovery_codes, name="recovery_codes"),
    path("security/", views.security, name="security"),
    path("security/set-up/", views.security_setup, name="security_setup"),
    path("security/new-codes/", views.security_new_codes, name="security_new_codes"),
    path("security/turn-off/", views.security_turn_off, name="security_turn_off"),
]
