"""`python -m rewardlab …` runs the CLI (as `accelerate launch -m rewardlab` and `torchrun -m` do)."""

import sys

from rewardlab.cli import main

sys.exit(main())
