"""try it out: uploaded photos, their matches and their votes

A photo someone tries (upload; the photo file only with consent, its features always),
every variant's top-k catalog matches for it (upload_match) and the judgments of those
matches (upload_vote), never pooled with the game's votes (docs/webapp.md).

Revision ID: 0007_try_it_out
Revises: 0006_pooled_judgments
Create Date: 2026-12-05 22:00:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0007_try_it_out'
down_revision = '0006_pooled_judgments'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "upload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("voter_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=True),
        sa.Column("service_build", sa.String(length=128), nullable=False),
        sa.Column("photo_file", sa.String(length=80), nullable=True),
        sa.Column("features", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["voter_id"], ["voter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nonce"),
    )
    op.create_index("ix_upload_voter_id", "upload", ["voter_id"])
    op.create_table(
        "upload_match",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("distance", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"]),
        sa.ForeignKeyConstraint(["upload_id"], ["upload.id"]),
        sa.ForeignKeyConstraint(["variant_id"], ["variant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nonce"),
        sa.UniqueConstraint("upload_id", "variant_id", "rank"),
    )
    op.create_table(
        "upload_vote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("match_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("voter_id", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("nope_reason", sa.String(length=12), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decision_ms", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"]),
        sa.ForeignKeyConstraint(["match_id"], ["upload_match.id"]),
        sa.ForeignKeyConstraint(["upload_id"], ["upload.id"]),
        sa.ForeignKeyConstraint(["voter_id"], ["voter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upload_id", "image_id", "voter_id"),
    )
    op.create_index("ix_upload_vote_upload_id", "upload_vote", ["upload_id"])


def downgrade():
    op.drop_index("ix_upload_vote_upload_id", table_name="upload_vote")
    op.drop_table("upload_vote")
    op.drop_table("upload_match")
    op.drop_index("ix_upload_voter_id", table_name="upload")
    op.drop_table("upload")
