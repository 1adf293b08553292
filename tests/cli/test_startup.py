"""`fedcrm --help` stays fast: the CLI module imports no heavy library until a command runs.

Not a timed test (benchmarks/cli_startup.py measures the wall time); this checks the cause, the
modules loaded, which does not depend on how busy the machine is."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "opacus", "sklearn", "scipy", "pandas", "prefect", "mlflow", "great_expectations", "pydantic",
         "cryptography", "numpy", "boto3", "sqlalchemy")


def test_the_cli_loads_no_heavy_library_to_show_its_help() -> None:
    probe = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
             "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split())
    assert "cli" in loaded  # the probe ran
    assert sorted(loaded & set(HEAVY)) == []
