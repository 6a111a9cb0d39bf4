"""What the leaderboard and the team page show, read from the counters and the
newest fit.

See docs/architecture.md."""
