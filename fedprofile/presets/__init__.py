"""The shipped data sets as simulation presets, and how a table splits into partners.

Shared core: the simulator builds its runs from these, and a virtual partner of
``flwr run .`` reads its slice of a preset without importing the simulator, through
:func:`fedprofile.presets.datasets.preset_partition_file`.
"""
