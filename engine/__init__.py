"""Dope or Nope's offline engine: catalog, networks, features, indexes, pairs, evaluation."""

__version__ = "0.2.0"
