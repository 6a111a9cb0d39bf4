"""drop indexes that no query needs

Every index is written on each vote and each issued token. ix_vote_voter_id,
ix_vote_variant_id and ix_issued_token_voter_id are the leading column of
ix_vote_voter_id_created_at, ix_vote_variant_id_verdict and
ix_issued_token_voter_issued_at, which serve the same lookups and foreign keys.
ix_vote_pair_id and ix_issued_token_pair_id only served deletes of pairs, which
never happen (pairs are only added); every join goes from them to pair's key.

Revision ID: 0002_drop_redundant_indexes
Revises: 0001_initial
Create Date: 2026-11-23 21:40:00

"""
from alembic import op


revision = '0002_drop_redundant_indexes'
down_revision = '0001_initial'
branch_labels = None
depends_on = None

DROPPED = (("vote", "ix_vote_voter_id", ["voter_id"]),
           ("vote", "ix_vote_variant_id", ["variant_id"]),
           ("vote", "ix_vote_pair_id", ["pair_id"]),
           ("issued_token", "ix_issued_token_voter_id", ["voter_id"]),
           ("issued_token", "ix_issued_token_pair_id", ["pair_id"]))


def upgrade():
    for table, name, _ in DROPPED:
        op.drop_index(name, table_name=table)


def downgrade():
    for table, name, columns in DROPPED:
        op.create_index(name, table, columns, unique=False)
