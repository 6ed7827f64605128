"""Prometheus metrics of the operator (served on settings.metrics_port)."""

from prometheus_client import Counter, Histogram

JOBS_CREATED = Counter("videogen_jobs_created_total", "Jobs created for VideoGenerations.")
TRANSITIONS = Counter("videogen_phase_transitions_total", "VideoGeneration phase changes, by new phase.", ["phase"])
GENERATION_SECONDS = Histogram("videogen_generation_seconds", "Runner time of succeeded generations.",
                               buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
PROGRESS_UPDATES = Counter("videogen_progress_updates_total", "Progress nudges received from Redis.")
PROGRESS_FOREIGN = Counter("videogen_progress_nudges_ignored_total",
                           "Progress nudges for a task of another namespace than their channel's.")
