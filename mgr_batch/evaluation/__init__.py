"""Labelled data, metrics, calibration and the reports that score a model."""
