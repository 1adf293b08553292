"""Credentials from Prefect Secret blocks, read inside the region that needs them.

A region's worker may name a Secret block instead of holding a credential in its environment:
``FEDCRM_REGION_SOURCE=secret:crm-eu-source`` (the whole source spec, e.g. a SQL URL with its
password) or a Salesforce source's ``session_id_secret``. The value is read from the Prefect API
by the regional run itself, so it is never a flow parameter, a log line or a coordinator's
concern.
"""

from __future__ import annotations

from fedcrm.errors import ConfigError

SECRET_PREFIX = "secret:"


def read_secret(block_name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_name).get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise ConfigError(f"no Prefect Secret block named {block_name!r} ({exc})",
                          hint=f"create it where the region's worker can read it: Secret(value=...).save({block_name!r})"
                          ) from None
    return value if isinstance(value, str) else str(value)


def resolve_setting(value: str) -> str:
    """``secret:<block>`` → the Secret block's value; anything else as it is."""
    return read_secret(value.removeprefix(SECRET_PREFIX)) if value.startswith(SECRET_PREFIX) else value
