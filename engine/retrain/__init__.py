"""Retraining: a challenger variant learned from exported votes, gated against its
parent, published as a new build (docs/retrain.md).

See docs/architecture.md."""
