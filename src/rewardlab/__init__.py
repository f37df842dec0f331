"""rewardlab: does cleaning my preference data give me a better reward model?"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
