"""The broker's options as librdkafka settings, one set per client.

The `config` option passes librdkafka settings through, to every client or, with
a `producer.`, `consumer.` or `admin.` prefix, to one. It cannot set what an
option sets (it names the option instead), nor what the guarantees depend on
(`group.id`, the commit settings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, final

from tideflow.plugins.api import BackendConfigError

from .client import LIBRDKAFKA_LOG, ms

__all__ = ["ClientSettings"]

# librdkafka settings that the options set, and the option that sets each
_OPTION_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bootstrap.servers": "bootstrap",
        "metadata.broker.list": "bootstrap",
        "client.id": "client_id",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "sasl.username": "sasl_username",
        "sasl.password": "sasl_password",
        "ssl.ca.location": "ssl_ca_location",
        "auto.offset.reset": "offset_reset",
        "session.timeout.ms": "session_timeout",
        "heartbeat.interval.ms": "heartbeat_interval",
        "message.timeout.ms": "request_timeout",
        "delivery.timeout.ms": "request_timeout",
    }
)
# librdkafka settings that would break the guarantees above
_FIXED_KEYS: Final = frozenset({"group.id", "enable.auto.commit", "enable.auto.offset.store"})
_CLIENT_PREFIXES: Final = ("producer.", "consumer.", "admin.")


@final
class ClientSettings:
    """The options of one broker, checked, and the settings of each client made
    from them."""

    def __init__(self, config: Mapping[str, Any], base_dir: Path) -> None:
        """`config`: the broker's options (defaults filled in); `base_dir`: where
        relative paths start (the flow file's directory)."""
        self.config = config
        self.base_dir = base_dir
        #: bounds every wait on the cluster (see "Timeouts")
        self.request_timeout = float(config["request_timeout"])
        session = float(config["session_timeout"])
        heartbeat = float(config["heartbeat_interval"])
        for option, value in (
            ("request_timeout", self.request_timeout),
            ("heartbeat_interval", heartbeat),
        ):
            if value <= 0:
                raise BackendConfigError(
                    f'option `{option}` of broker "kafka" must be positive, not {value:g}'
                )
        if heartbeat >= session:
            raise BackendConfigError(
                f'option `heartbeat_interval` of broker "kafka" ({heartbeat:g}s) must be '
                f"shorter than `session_timeout` ({session:g}s)"
            )
        self._extra = self._split_config(config.get("config") or {})

    @staticmethod
    def _split_config(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """The `config` option, per client ("" for every client)."""
        split: dict[str, dict[str, str]] = {"": {}, "producer": {}, "consumer": {}, "admin": {}}
        for key, value in config.items():
            client, name = "", str(key)
            for prefix in _CLIENT_PREFIXES:
                if name.startswith(prefix):
                    client, name = prefix[:-1], name[len(prefix) :]
                    break
            if name in _OPTION_KEYS:
                raise BackendConfigError(
                    f'`config` of broker "kafka" sets `{key}`; use the option '
                    f"`{_OPTION_KEYS[name]}` instead"
                )
            if name in _FIXED_KEYS:
                raise BackendConfigError(
                    f'`config` of broker "kafka" cannot set `{key}`: tideflow manages it'
                )
            split[client][name] = str(value)
        return split

    def client_conf(self, client: str) -> dict[str, Any]:
        """librdkafka settings of one client ("producer", "consumer" or "admin")."""
        config = self.config
        conf: dict[str, Any] = {
            "bootstrap.servers": config["bootstrap"],
            "client.id": config["client_id"],
            "security.protocol": config["security_protocol"],
            "socket.timeout.ms": ms(self.request_timeout),
            "logger": LIBRDKAFKA_LOG,
        }
        if config.get("sasl_mechanism") is not None:
            conf["sasl.mechanism"] = config["sasl_mechanism"]
        if config.get("sasl_username") is not None:
            conf["sasl.username"] = config["sasl_username"]
        if config.get("sasl_password") is not None:
            conf["sasl.password"] = config["sasl_password"]
        if config.get("ssl_ca_location") is not None:
            location = Path(str(config["ssl_ca_location"])).expanduser()
            conf["ssl.ca.location"] = str(self.base_dir / location)
        conf.update(self._extra[""])
        conf.update(self._extra[client])
        return conf

    def producer_conf(self) -> dict[str, Any]:
        """The idempotent producer's settings (see "Publishing")."""
        conf = self.client_conf("producer")
        conf["message.timeout.ms"] = ms(self.request_timeout)
        conf.setdefault("enable.idempotence", True)
        # as Java clients hash keys, so that one key lands on one partition
        conf.setdefault("partitioner", "murmur2_random")
        conf.setdefault("request.timeout.ms", min(ms(self.request_timeout), 30000))
        return conf

    def member_conf(self, group: str) -> dict[str, Any]:
        """The settings of a group's consumer, without its callbacks: it commits
        what was acknowledged itself and rebalances cooperatively."""
        config = self.config
        conf = {
            **self.client_conf("consumer"),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": config["offset_reset"],
            "session.timeout.ms": ms(float(config["session_timeout"])),
            "heartbeat.interval.ms": ms(float(config["heartbeat_interval"])),
        }
        conf.setdefault("partition.assignment.strategy", "cooperative-sticky")
        return conf

    def committer_conf(self, group: str) -> dict[str, Any]:
        """The settings of a consumer that only commits, as `group`."""
        return {**self.client_conf("consumer"), "group.id": group, "enable.auto.commit": False}
