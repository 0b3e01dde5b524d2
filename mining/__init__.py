"""edgemine's library: the lake, its tables, and SQL over it.

    from mining import Lake, LakeDB, load_config

    lake = Lake.from_config(load_config())          # ./lake, $EDGEMINE_LAKE or the config's
    with LakeDB(lake) as db:                         # read-only DuckDB, a view per table
        low = db.query("SELECT * FROM predictions WHERE confidence < 0.5")   # an Arrow table

Tables and their columns: mining.schema (docs/LAKE.md). Jobs that write the lake: jobs/.
"""

from mining.config import Config, ConfigError, load_config
from mining.lake import Lake
from mining.schema import TABLES
from mining.sql import LakeDB, ReadOnlyError, view_statements

__all__ = ["Config", "ConfigError", "Lake", "LakeDB", "ReadOnlyError", "TABLES", "load_config", "view_statements"]
