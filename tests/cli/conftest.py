"""The CLI in-process (typer's runner): exit code and output, never an unexpected exception."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app


@pytest.fixture
def invoke():
    runner = CliRunner()

    def run(args: list[str], cwd) -> tuple[int, str]:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(cwd)
            result = runner.invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        return result.exit_code, result.output

    return run
