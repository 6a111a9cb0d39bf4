import sys
from pathlib import Path

# Make tests/buildmaker.py importable as `buildmaker` from every test folder.
sys.path.insert(0, str(Path(__file__).parent))
