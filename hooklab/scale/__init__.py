"""Scale-out: dataset-wide CAM evaluation and edit sweeps, in-process or on Ray.

The layer after ``studies``: it builds on the models, the CAM methods and metrics, the store
and ``watch``; charts, the CLI and the dashboard build on it. Ray is optional
(``pip install hooklab[ray]``); nothing here imports it at module level.
"""
