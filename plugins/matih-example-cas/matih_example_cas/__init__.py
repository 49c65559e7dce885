"""A content-addressed artifacts backend for matih-lite (and a template for plugin authors)."""
