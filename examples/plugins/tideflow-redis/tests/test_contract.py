"""tideflow's broker contract, run against a real Redis server."""

from __future__ import annotations

from tideflow.testing import BrokerContract


class TestRedisBrokerContract(BrokerContract):
    pass
