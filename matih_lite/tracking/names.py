"""Run names people can remember: ``bold-heron-417``."""

from __future__ import annotations

import random

_ADJECTIVES = ("amber", "bold", "brisk", "calm", "clever", "crisp", "dapper", "eager", "fleet", "gentle", "glad",
               "honest", "keen", "lively", "lucid", "mellow", "nimble", "proud", "quiet", "rapid", "sly", "sunny",
               "swift", "tidy", "vivid", "witty", "zesty")
_NOUNS = ("badger", "bee", "crane", "dolphin", "falcon", "fox", "gecko", "heron", "ibis", "jay", "koala", "lark",
          "lynx", "marten", "newt", "otter", "owl", "panda", "quail", "raven", "seal", "swan", "tern", "wolf", "yak")


def random_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(100, 999)}"
