"""Consumers: what a handler sees (`handler`), how a message is dead-lettered
(`dead_letter`), and the instance that fetches, calls the handler and
acknowledges (`instance`, what `tideflow worker` runs)."""
