"""Synthetic demo patients (no real patient data) and the tools to load them."""
