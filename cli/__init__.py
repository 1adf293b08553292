"""The ``fedcrm`` command line (the embedded-mode launcher)."""
