"""The blueprints: routes only; the rooms below do the work.

See docs/architecture.md."""
