"""matih-s3: the S3 artifacts backend for matih-lite (``artifacts = { backend = "s3", bucket = "..." }``).

Artifacts live as objects under a bucket and prefix, each with its sha256 and size as object
metadata, checked on every read. The backend registers through the ``matih_lite`` entry point;
boto3 is imported on the store's first call, never when matih-lite starts.
"""

from matih_s3.plugin import S3Settings, create_store

__all__ = ["S3Settings", "create_store"]
__version__ = "0.1.0"
