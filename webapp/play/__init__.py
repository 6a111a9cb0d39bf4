"""The game's requests: who votes, which pair next, serving it, recording the vote,
and every limit.

See docs/architecture.md."""
