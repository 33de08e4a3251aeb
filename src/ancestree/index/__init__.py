"""The atlas: a persistent SQLite index of many models, placed into one Model Graph incrementally.

>>> from ancestree.index import Atlas
>>> with Atlas("ancestree.db") as atlas:           # doctest: +SKIP
...     atlas.add(scan=["/models"], dask="tcp://scheduler:8786")
...     atlas.show("org/model")["lineage"]
"""

from ancestree.index.atlas import AddReport, Atlas
from ancestree.index.placement import Placement, place, rebuild
from ancestree.index.store import DEFAULT_DB, Edge, IndexStore

__all__ = ["AddReport", "Atlas", "DEFAULT_DB", "Edge", "IndexStore", "Placement", "place", "rebuild"]
