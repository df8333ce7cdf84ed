"""The compliance audit trail: what is recorded beyond TaskEvent and auditlog's field diffs
(access, sign-in and denial records), the hash chain that makes tampering evident, and the
read-only pages that compliance reviewers search and export.

- `records`: the recording functions (`record_task_access`, `audit_event_record`,
  `audit_actor`) and the sign-in receivers.
- `chain`: sealing the append-only tables into the hash chain and verifying it.
- `selectors`, `forms`, `views`, `urls`: the `/audit/` pages.
"""
