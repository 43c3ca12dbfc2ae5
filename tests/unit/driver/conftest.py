"""The driver's unit tests share their fake node (``fake_ganesha_node``): importable by its name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
