"""`field__nonblank=True`: the text is not empty, as a literal in the SQL.

With server-side binding (settings: DB_PREPARED_STATEMENTS) every ORM value is a bound
parameter, and `~Q(patient_mrn="")` becomes `NOT (patient_mrn = $3)`. A prepared statement's
generic plan cannot tell that `$3` is the empty string, so it cannot use a partial index whose
predicate is `patient_mrn <> ''` (`task_by_patient`) and scans every open task instead. This
lookup writes the literal, which the planner matches against the index's predicate.
"""

from django.db.models import CharField, Lookup, TextField


class NonBlank(Lookup):
    lookup_name = "nonblank"
    prepare_rhs = False

    def get_prep_lookup(self):
        if self.rhs is not True:
            raise ValueError("__nonblank takes True only")
        return self.rhs

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} <> ''", params


def register() -> None:
    CharField.register_lookup(NonBlank)
    TextField.register_lookup(NonBlank)
