"""The only place that imports TensorFlow and touches its private (and LiteRT's) APIs."""
