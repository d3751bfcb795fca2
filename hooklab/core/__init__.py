"""The core vocabulary every layer shares: errors, edits, layer resolution, the Trace and
tensor statistics, the machine description. Imports nothing else of hooklab."""
