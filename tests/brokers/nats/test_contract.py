"""The broker contract suite, enabled as a third party would enable it."""

from __future__ import annotations

from tideflow.testing import BrokerContract


class TestNatsBroker(BrokerContract):
    pass
