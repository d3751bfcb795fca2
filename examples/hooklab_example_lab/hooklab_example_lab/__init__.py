"""An example lab package for hooklab: its models are in :mod:`hooklab_example_lab.models`."""
