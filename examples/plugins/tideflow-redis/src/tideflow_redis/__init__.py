"""tideflow-redis: a Redis Streams broker for tideflow (`kind = "redis"`)."""

from __future__ import annotations

from .broker import RedisBroker

__all__ = ["RedisBroker"]
__version__ = "0.1.0"
