"""variants remember their lineage

A variant retrained from votes (python -m engine retrain) names its parent and its
round, and keeps the engine's lineage record (what it learned, the gate's figures,
the vote file's sha256) as JSON text. All three are empty for every other variant.

Revision ID: 0004_variant_lineage
Revises: 0003_vote_trigger
Create Date: 2026-12-01 22:20:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0004_variant_lineage'
down_revision = '0003_vote_trigger'
branch_labels = None
depends_on = None


COLUMNS = (("parent_slug", sa.String(length=128)), ("round", sa.Integer()),
           ("lineage", sa.Text()))


# Plain ALTER TABLE, not batch mode: batch mode copies the table, which the vote
# trigger (0003) refers to. SQLite adds and (from 3.35) drops columns in place.
def upgrade():
    for name, type_ in COLUMNS:
        op.add_column("variant", sa.Column(name, type_, nullable=True))


def downgrade():
    for name, _ in reversed(COLUMNS):
        op.execute(f"ALTER TABLE variant DROP COLUMN {name}")
