"""The model registry: registered models, versions, aliases and governed stages above the metadata slot."""

from matih_lite.registry.policy import Policy, Threshold, policy_for
from matih_lite.registry.service import Registry, Transition, normalize_stage

__all__ = ["Policy", "Registry", "Threshold", "Transition", "normalize_stage", "policy_for"]
