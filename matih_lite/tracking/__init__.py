"""Experiment tracking: the rules above the metadata and artifacts slots."""

from matih_lite.tracking.logged_models import LoggedModels
from matih_lite.tracking.service import Tracking

__all__ = ["LoggedModels", "Tracking"]
