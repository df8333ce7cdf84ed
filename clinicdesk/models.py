# The audit trail's own tables live in the `clinicdesk.audit` package; Django finds an app's
# models through this module.
from clinicdesk.audit.models import AuditEvent, AuditLink, AuditSeal

__all__ = ["AuditEvent", "AuditLink", "AuditSeal"]
