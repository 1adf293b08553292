"""fedcrm core: contracts, features, models, aggregation maths, evaluation.

Pure domain logic. Nothing in this package imports Prefect; orchestration lives in
``tasks/`` and ``flows/``, and IO lives in ``connectors/``.
"""

__version__ = "0.1.0"
