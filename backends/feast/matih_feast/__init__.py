"""matih-feast: the Feast features backend for matih-lite (``features = { backend = "feast", repo = "features" }``).

The definitions matih-lite parses become a Feast repo (``feature_store.yaml`` and a generated
``definitions.py``) applied with Feast's own apply; offline retrieval is Feast's offline store
(duckdb by default, or file), online is Feast's Redis store. Feast (about 5 s to import) loads
only when the backend is first used, never when settings are validated.
"""

from matih_feast.plugin import FeastSettings, create_store

__all__ = ["FeastSettings", "create_store"]
__version__ = "0.1.0"
