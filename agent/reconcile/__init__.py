"""Reconcile: plan (pure) and enforce (the only host writer) the desired netns mode."""
