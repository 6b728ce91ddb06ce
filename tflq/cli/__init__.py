"""The tflq command line: a thin click shell over the library, one module per group of commands."""
