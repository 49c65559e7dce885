"""A platform in the test's working folder with the customer definitions of the contract kit applied."""

from __future__ import annotations

import pytest

from matih_lite.testing.features import CUSTOMER, DAY, T0, Platform


@pytest.fixture
def repo(hermetic):
    """``./features`` with ``customer.toml`` and its parquet source (not applied)."""
    folder = hermetic / "features"
    folder.mkdir()
    (folder / "customer.toml").write_text(CUSTOMER)
    return folder


@pytest.fixture
def platform(repo):
    from matih_lite.host import Host

    host = Host.open()
    p = Platform(host, repo)
    p.customers([
        (1, T0 - 2 * DAY, T0 - 2 * DAY, 0.1, 1),
        (1, T0 - DAY, T0 - DAY, 0.2, 2),
        (2, T0 - DAY, T0 - DAY, 0.3, 3),
        (2, T0 - DAY, T0 - DAY + DAY / 24, 0.4, 4),
    ])
    yield p
    host.close()


@pytest.fixture
def applied(platform):
    platform.apply()
    return platform
