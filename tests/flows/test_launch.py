"""What a regional deployment run is given as its parameter."""

from __future__ import annotations

import json

from fedcrm.config import SqlSource, load_config
from flows.launch import settings_for_regions


def test_no_region_location_or_credential_becomes_a_flow_parameter(tmp_path):
    config = load_config(overrides=[f"state_dir={tmp_path}"])
    apac = config.federation.regions["apac"].model_copy(update={
        "source": SqlSource(kind="sql", url="postgresql+psycopg://crm:s3cret@db.apac.internal/crm", table="leads"),
        "store": "s3://apac-private/fedcrm", "work_pool": "crm-apac-sg"})
    config = config.model_copy(update={"federation": config.federation.model_copy(
        update={"regions": {**config.federation.regions, "apac": apac}})})
    sent = settings_for_regions(config)
    assert "s3cret" not in json.dumps(sent) and "apac-private" not in json.dumps(sent)
    assert sent["federation"]["regions"]["apac"]["work_pool"] == "crm-apac-sg"  # the job's own settings stay
    assert sent["training"] == config.model_dump(mode="json")["training"]
