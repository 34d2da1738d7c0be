"""Data: synthetic cohorts, datalists."""
