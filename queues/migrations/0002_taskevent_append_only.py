from django.db import migrations

# The timeline is evidence: refuse UPDATE and DELETE at the database, whatever the ORM does.
APPEND_ONLY = """
CREATE OR REPLACE FUNCTION clinicdesk_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER taskevent_append_only
    BEFORE UPDATE OR DELETE ON queues_taskevent
    FOR EACH ROW EXECUTE FUNCTION clinicdesk_refuse_change();
"""

REVERSE = """
DROP TRIGGER IF EXISTS taskevent_append_only ON queues_taskevent;
"""


class Migration(migrations.Migration):
    dependencies = [("queues", "0001_initial")]

    operations = [migrations.RunSQL(APPEND_ONLY, REVERSE)]
