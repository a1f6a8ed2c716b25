"""Utilities shared by the package and the tools."""
