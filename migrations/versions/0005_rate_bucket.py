"""per-address request budgets

A script that drops its cookie is a new voter every time; the address it comes
from is not. One row per (kind, address): a token bucket and an hourly count
(webapp/limits.py), shared by every worker and host.

Revision ID: 0005_rate_bucket
Revises: 0004_variant_lineage
Create Date: 2026-12-01 22:45:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0005_rate_bucket'
down_revision = '0004_variant_lineage'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "rate_bucket",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("hour_start", sa.Float(), nullable=False),
        sa.Column("hour_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade():
    op.drop_table("rate_bucket")
