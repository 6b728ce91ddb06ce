"""``python -m tflq.cli``: the tflq command."""

from tflq.cli.app import main

main()
