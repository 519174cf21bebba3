#!/usr/bin/env python
"""Train, resume or evaluate itp's Double DQN (the seed's entry point; the logic is in ``itp.training``).

    python training/train_dqn.py --episodes 1000 --batch-size 32
    python training/train_dqn.py --load-model models/dqn_checkpoint_500 --episodes 500
    python training/train_dqn.py --load-model models/dqn_final --evaluate

The same as ``itp train`` (``itp train --help`` lists every flag).
"""

from __future__ import annotations

import sys

from itp.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
