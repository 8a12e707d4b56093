"""Entry point of the reference trainer: `python tools/train.py --config ... --run-dir ...` (or torchrun)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_trainer.train import main

if __name__ == "__main__":
    sys.exit(main())
