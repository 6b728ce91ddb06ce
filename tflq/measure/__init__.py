"""Measure .tflite files with the LiteRT interpreter: runner, latency protocol, metrics, inspection."""
