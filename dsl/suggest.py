"""The one "did you mean ...?" of tideflow, for the language's messages.

It lives in the plugin API (`tideflow.plugins.api.suggest`), the lowest room, because
backends use it too when they reject an unknown option; this module is its name
for the dsl, the compiler and everything above.
"""

from __future__ import annotations

from tideflow.plugins.api.suggest import closest, suggest

__all__ = ["closest", "suggest"]
