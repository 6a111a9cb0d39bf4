"""Try it out: a visitor's own photo, every variant's matches from the engine's query
service, judged blind (docs/webapp.md, "Try it out")."""
