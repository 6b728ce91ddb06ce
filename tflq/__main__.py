"""``python -m tflq``: the tflq command."""
from __future__ import annotations

from tflq.cli.app import main

if __name__ == "__main__":  # pragma: no cover
    main()
