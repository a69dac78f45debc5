"""Maintenance tools that ship with the device package (not used at run time)."""
