"""Benchmark problems with exact posteriors."""
