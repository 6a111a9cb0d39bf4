"""The leaderboard's statistics: pure functions over arrays, never Flask or
SQLAlchemy (docs/statistics.md).

See docs/architecture.md."""
