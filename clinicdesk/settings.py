"""ClinicDesk settings: one module, every value from the environment with a safe default.

With DEBUG on (the default for development) the defaults just work. With DEBUG=false a missing
SECRET_KEY or ALLOWED_HOSTS is an error, never a silent default.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, *, dev_default: str, debug: bool) -> str:
    value = os.environ.get(name, "")
    if value:
        return value
    if debug:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is false")


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_secret(
    "SECRET_KEY", dev_default="django-insecure-clinicdesk-development-only", debug=DEBUG
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is false")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "guardian",
    "auditlog",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_q",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "accounts",
    "queues",
    "routing",
    "escalation",
    "clinicdesk",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside everything that may answer by itself (the outage page, the lockout page): every
    # page carries the Content-Security-Policy.
    "csp.middleware.CSPMiddleware",
    # Before everything that reads the database (sessions, sign-in, idle logoff): a database
    # outage answers 503 with Retry-After, never a 500 page (clinicdesk.outage).
    "clinicdesk.outage.DatabaseOutageMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): signed in with a second factor (django-otp).
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.IdleLogoutMiddleware",
    "accounts.middleware.SignInLimitsMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # django-auditlog's middleware, its receiver connected once (clinicdesk.audit.actor).
    "clinicdesk.audit.actor.AuditActorMiddleware",
    # Records every 403, and every 404 answered to someone signed in (clinicdesk.audit).
    "clinicdesk.audit.middleware.DenialAuditMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "clinicdesk.urls"
WSGI_APPLICATION = "clinicdesk.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "clinicdesk.context_processors.clinicdesk",
            ],
        },
    },
]

# --- Database: PostgreSQL only. DATABASE_URL, or the embedded server under var/. ---
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    warnings.filterwarnings("ignore", module="platformdirs")
    from clinicdesk.embedded_db import database_url

    DATABASE_URL = database_url(BASE_DIR)

import dj_database_url  # noqa: E402

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    )
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://…)")
# A Unix-socket URL (postgresql://user@/db?host=/socket/dir) carries the host as a query option.
_socket_dir = DATABASES["default"].get("OPTIONS", {}).pop("host", None)
if _socket_dir and not DATABASES["default"].get("HOST"):
    DATABASES["default"]["HOST"] = _socket_dir
# A persistent connection that died (the server restarted) is noticed and replaced at the
# start of the next request; while the server is down a connection attempt fails within
# DB_CONNECT_TIMEOUT seconds, and the request is answered 503 (clinicdesk.outage).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5, minimum=1)
)
# Server-side binding lets psycopg prepare the statements a connection runs again and again
# (routing's staff and fingerprint reads, the claim query): their planning cost more than
# their execution. Turn it off (DB_PREPARED_STATEMENTS=false) behind a pooler in transaction
# mode that cannot keep prepared statements.
if env_bool("DB_PREPARED_STATEMENTS", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get(
    "TEST_DATABASE_NAME", "test_clinicdesk"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Authentication and sessions ---
AUTHENTICATION_BACKENDS = [
    # First: refuses a sign-in while its account and address are locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_RAISE_403 = False
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "queues:my_work"
LOGOUT_REDIRECT_URL = "accounts:login"
# Argon2 for new and changed passwords; the others stay to read older hashes, which Django
# re-hashes with Argon2 at the person's next sign-in.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    # Django's offline list of 20,000 common passwords, and ours of clinic words + digits.
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "accounts.passwords.WorkplacePasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed sign-ins are limited per account and address (django-axes): after
# LOGIN_FAILURE_LIMIT failures that pair waits LOGIN_LOCKOUT_MINUTES. Per pair rather than per
# address, so that one person's typos cannot lock out a whole clinic behind one NAT address.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# A wrong two-factor code counts as a failed sign-in; the code itself is never stored.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]
# Members of these roles, and anyone with access to the admin, sign in with a second factor
# (an authenticator app's code, or a recovery code). Others may choose to.
TWO_FACTOR_REQUIRED_ROLES = ["Manager", "Supervisor", "Compliance"]
OTP_TOTP_ISSUER = "ClinicDesk"
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 15, minimum=1)
# The longest a session lives after sign-in, enforced on the server from the sign-in time
# (accounts.middleware.SignInLimitsMiddleware), whatever the cookie says.
SESSION_MAX_HOURS = env_int("SESSION_MAX_HOURS", 12, minimum=1)
SESSION_COOKIE_AGE = SESSION_MAX_HOURS * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles only from our own static files, no
# inline code anywhere: behaviour lives in static/js/*.js, styling in static/css/*.css (htmx is
# told not to inject its indicator <style>, see base.html). Redoc's page (/api/docs/redoc/) is
# the one view with a wider policy, though not for scripts (queues/api/docs_urls.py). The
# deploy checks (clinicdesk/checks.py) warn when script-src is weakened.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# Production deployments set SECURE_HSTS_PRELOAD deliberately; the deploy check should not nag.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Internationalisation and time: stored in UTC, shown in the clinic's zone ---
LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "America/New_York")
USE_I18N = True
USE_TZ = True

# --- Static files (whitenoise) ---
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
MEDIA_URL = "media/"

# --- Email ---
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "clinicdesk@localhost")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
# Inbound mail: `ingest_email --imap` and the poll-imap schedule read this mailbox (only when
# IMAP_HOST is set). Fetched messages are flagged \Seen, or moved to IMAP_MOVE_TO when set.
IMAP_HOST = os.environ.get("IMAP_HOST", "")
IMAP_SSL = env_bool("IMAP_SSL", True)
IMAP_PORT = env_int("IMAP_PORT", 993 if IMAP_SSL else 143, minimum=1)
IMAP_USER = os.environ.get("IMAP_USER", "")
IMAP_PASSWORD = os.environ.get("IMAP_PASSWORD", "")
IMAP_FOLDER = os.environ.get("IMAP_FOLDER", "INBOX")
IMAP_MOVE_TO = os.environ.get("IMAP_MOVE_TO", "")

# --- Jobs: django-q2. ORM broker on PostgreSQL; Redis when REDIS_URL is set. ---
REDIS_URL = os.environ.get("REDIS_URL", "")
Q_CLUSTER = {
    "name": "clinicdesk",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    # A job that runs past `timeout` is killed; `retry` must be longer so that a slow job
    # is never handed to a second worker while the first still runs.
    "timeout": 50,
    "retry": 60,
    "max_attempts": 5,
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "poll": 1,
    "label": "Jobs",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "queues.api.authentication.ClientTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Per integration client and per person (queues.api.throttling); counted per process.
    "DEFAULT_THROTTLE_RATES": {
        "client": os.environ.get("API_CLIENT_RATE", "6000/min"),
        "staff": os.environ.get("API_STAFF_RATE", "600/min"),
    },
}
# A fax's PDF travels base64-encoded in JSON: the intake API reads bodies up to this size.
INTAKE_MAX_BODY_BYTES = env_int("INTAKE_MAX_BODY_MB", 40, minimum=1) * 1024 * 1024
SPECTACULAR_SETTINGS = {
    "TITLE": "ClinicDesk API",
    "DESCRIPTION": "Intake for other systems (EHR, phone, fax, gateways) and the unified queue's "
    "tasks for them and for staff. Integration clients send `Authorization: Token <token>`; "
    "staff use their signed-in session (with the CSRF token). A 400 answers "
    '`{"errors": {"field": ["what to fix"]}}`, with dotted names for nested fields.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Separate request and response components, so that a generated client's models fit.
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # The docs pages serve Swagger UI and Redoc from our static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "queues.models.Task.Status",
        "ChannelEnum": "queues.models.Channel",
        "PriorityEnum": "queues.models.Priority",
    },
    # OpenAPI links from every answer that names a task to the calls on that task.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "queues.api.schema.add_task_links",
    ],
}

# --- Audit ---
AUDITLOG_INCLUDE_ALL_MODELS = False
AUDITLOG_DISABLE_REMOTE_ADDR = False
# Emergency access ("break the glass"): how long a person may read a task outside their
# departments after giving a reason.
EMERGENCY_ACCESS_HOURS = env_int("EMERGENCY_ACCESS_HOURS", 4, minimum=1)

# --- Demo ---
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "clinicdesk-demo")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # A database outage is logged once by clinicdesk.outage, not as a traceback per request.
    "filters": {"database_outage": {"()": "clinicdesk.outage.OutageLogFilter"}},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        "django.request": {"filters": ["database_outage"]},
    },
}
