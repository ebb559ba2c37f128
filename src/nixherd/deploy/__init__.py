"""Deploying: the per-node pipeline, activation with magic rollback, checks, rollouts, reports."""
