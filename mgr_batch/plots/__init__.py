"""Figures as PNG bytes: one headless pyplot helper and the figures of the reports."""
