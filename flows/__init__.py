"""Prefect flows: wiring only. Read ``flows/training.py`` top to bottom as the job's DAG."""
