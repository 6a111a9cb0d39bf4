"""count votes and spend their tokens in a trigger

A stored vote raises its variant's counter for its verdict and marks its issued
token used, in the vote's own transaction, whoever inserts it. The vote request
then runs two statements instead of four. The counters are recounted from the
votes table on the way up, so a database whose counters had drifted starts right.
The same trigger is in webapp/models.py for `db.create_all()`; this is a frozen
copy, and tests/webapp/test_migrations.py checks that the two agree.

Revision ID: 0003_vote_trigger
Revises: 0002_drop_redundant_indexes
Create Date: 2026-11-23 23:25:00

"""
from alembic import op


revision = '0003_vote_trigger'
down_revision = '0002_drop_redundant_indexes'
branch_labels = None
depends_on = None

TRIGGER = {
    "sqlite": ["""
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW
BEGIN
  UPDATE variant SET dope_count = dope_count + (NEW.verdict = 'dope'),
                     nope_count = nope_count + (NEW.verdict = 'nope'),
                     skip_count = skip_count + (NEW.verdict = 'skip')
   WHERE id = NEW.variant_id;
  UPDATE issued_token SET used = 1 WHERE nonce = NEW.token_nonce;
END"""],
    "postgresql": ["""
CREATE FUNCTION vote_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE variant SET dope_count = dope_count + CAST(NEW.verdict = 'dope' AS integer),
                     nope_count = nope_count + CAST(NEW.verdict = 'nope' AS integer),
                     skip_count = skip_count + CAST(NEW.verdict = 'skip' AS integer)
   WHERE id = NEW.variant_id;
  UPDATE issued_token SET used = true WHERE nonce = NEW.token_nonce;
  RETURN NULL;
END
$$""", """
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW EXECUTE FUNCTION vote_counted()"""],
}
DROP = {
    "sqlite": ["DROP TRIGGER vote_counted"],
    "postgresql": ["DROP TRIGGER vote_counted ON vote", "DROP FUNCTION vote_counted()"],
}
RECOUNT = ("UPDATE variant SET {0}_count = (SELECT COUNT(*) FROM vote "
           "WHERE vote.variant_id = variant.id AND vote.verdict = '{0}')")


def upgrade():
    for statement in TRIGGER[op.get_bind().dialect.name]:
        op.execute(statement)
    for verdict in ("dope", "nope", "skip"):
        op.execute(RECOUNT.format(verdict))


def downgrade():
    for statement in DROP[op.get_bind().dialect.name]:
        op.execute(statement)
