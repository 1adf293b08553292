"""All IO of fedcrm sits behind two small interfaces (see ``connectors.base``):

* ``RecordSource``: reads a region's CRM records (local CSV/parquet now; Salesforce, S3 and SQL
  follow the same interface).
* ``RegionStore``: the region's private store (quarantine, prepared data, later keys and the
  privacy ledger). Nothing in it ever leaves the region.

Every IO failure is raised as ``fedcrm.errors.ConnectorError`` naming the source, never a
credential.
"""

from connectors.base import RecordSource, RegionStore
from connectors.bundled import load_bundled
from connectors.local import LocalFileSource, LocalRegionStore, source_from_spec

__all__ = ["LocalFileSource", "LocalRegionStore", "RecordSource", "RegionStore", "load_bundled", "source_from_spec"]
