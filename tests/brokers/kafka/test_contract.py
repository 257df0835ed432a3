"""The broker contract suite, enabled for `kafka` as a third party would."""

from __future__ import annotations

from tideflow.testing import BrokerContract


class TestKafkaBrokerContract(BrokerContract):
    pass
