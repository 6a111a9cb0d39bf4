"""pooled judgments, the served pair's rule and probability, fit results

A vote judges an image pair, and now counts for every variant that returns that
image pair for that query (docs/statistics.md): variant gains judged_* counters,
kept by the vote trigger, which goes on counting the votes served for the variant
itself in *_count. An issued token and its vote record the rule that chose the pair
(uniform, adaptive, control, gold), the probability it had, and the fit whose
allocation drew it (its epoch, docs/statistics.md), and a keyed hash of the client's
address (origin), which the voter model groups by. fit_result keeps the
periodic fit's figures (webapp/fit.py), which the leaderboard reads. The counters
are recounted from the votes on the way up.

The same trigger is in webapp/models.py for `db.create_all()`; this is a frozen
copy, and tests/webapp/test_migrations.py checks that the two agree.

Revision ID: 0006_pooled_judgments
Revises: 0005_rate_bucket
Create Date: 2026-12-02 01:00:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0006_pooled_judgments'
down_revision = '0005_rate_bucket'
branch_labels = None
depends_on = None

# Every variant whose pair for the vote's query shows the vote's match.
_RETURNING = ("SELECT other.variant_id FROM pair AS shown JOIN pair AS other "
              "ON other.query_id = shown.query_id AND other.match_id = shown.match_id "
              "WHERE shown.id = NEW.pair_id")
TRIGGER = {
    "sqlite": [f"""
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW
BEGIN
  UPDATE variant SET dope_count = dope_count + (id = NEW.variant_id AND NEW.verdict = 'dope'),
                     nope_count = nope_count + (id = NEW.variant_id AND NEW.verdict = 'nope'),
                     skip_count = skip_count + (id = NEW.variant_id AND NEW.verdict = 'skip'),
                     judged_dope = judged_dope + (NEW.verdict = 'dope'),
                     judged_nope = judged_nope + (NEW.verdict = 'nope'),
                     judged_skip = judged_skip + (NEW.verdict = 'skip')
   WHERE id IN ({_RETURNING});
  UPDATE issued_token SET used = 1 WHERE nonce = NEW.token_nonce;
END"""],
    "postgresql": [f"""
CREATE FUNCTION vote_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE variant SET
    dope_count = dope_count + CAST(id = NEW.variant_id AND NEW.verdict = 'dope' AS integer),
    nope_count = nope_count + CAST(id = NEW.variant_id AND NEW.verdict = 'nope' AS integer),
    skip_count = skip_count + CAST(id = NEW.variant_id AND NEW.verdict = 'skip' AS integer),
    judged_dope = judged_dope + CAST(NEW.verdict = 'dope' AS integer),
    judged_nope = judged_nope + CAST(NEW.verdict = 'nope' AS integer),
    judged_skip = judged_skip + CAST(NEW.verdict = 'skip' AS integer)
   WHERE id IN ({_RETURNING});
  UPDATE issued_token SET used = true WHERE nonce = NEW.token_nonce;
  RETURN NULL;
END
$$""", """
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW EXECUTE FUNCTION vote_counted()"""],
}
# Migration 0003's trigger, restored on the way down.
OLD_TRIGGER = {
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
    "sqlite": ["DROP TRIGGER IF EXISTS vote_counted"],
    "postgresql": ["DROP TRIGGER IF EXISTS vote_counted ON vote",
                   "DROP FUNCTION IF EXISTS vote_counted()"],
}
RECOUNT_JUDGED = (
    "UPDATE variant SET judged_{0} = (SELECT COUNT(*) FROM vote "
    "JOIN pair AS shown ON shown.id = vote.pair_id "
    "JOIN pair AS mine ON mine.query_id = shown.query_id AND mine.match_id = shown.match_id "
    "WHERE mine.variant_id = variant.id AND vote.verdict = '{0}')")
RECOUNT = ("UPDATE variant SET {0}_count = (SELECT COUNT(*) FROM vote "
           "WHERE vote.variant_id = variant.id AND vote.verdict = '{0}')")


def _run(statements):
    for statement in statements[op.get_bind().dialect.name]:
        op.execute(statement)


# Plain ALTER TABLE, not batch mode: batch mode copies the table, which the vote
# trigger and other tables' foreign keys refer to. SQLite adds and (from 3.35) drops
# columns in place.
def upgrade():
    for verdict in ("dope", "nope", "skip"):
        op.add_column("variant", sa.Column(f"judged_{verdict}", sa.Integer(), nullable=False,
                                           server_default="0"))
    for table in ("issued_token", "vote"):
        op.add_column(table, sa.Column("reason", sa.String(length=12), nullable=True))
        op.add_column(table, sa.Column("probability", sa.Float(), nullable=True))
        op.add_column(table, sa.Column("fit_id", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("origin", sa.String(length=16), nullable=True))
    op.create_table(
        "fit_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_vote_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("epoch_weights", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _run(DROP)
    _run(TRIGGER)
    for verdict in ("dope", "nope", "skip"):
        op.execute(RECOUNT.format(verdict))
        op.execute(RECOUNT_JUDGED.format(verdict))


def downgrade():
    _run(DROP)  # first: the trigger names the columns that go
    op.drop_table("fit_result")
    for table in ("vote", "issued_token"):
        for column in ("origin", "fit_id", "probability", "reason"):
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for verdict in ("skip", "nope", "dope"):
        op.execute(f"ALTER TABLE variant DROP COLUMN judged_{verdict}")
    _run(OLD_TRIGGER)
