"""Diffusion Lab benchmarks (`python -m tests.bench`, `make bench`): issue 5's table as ratios.

Every compared figure is measured in one process with its variants interleaved round by round
(see ``timing.interleaved``), so load from other processes on a shared machine hits all variants
alike; absolute figures on a busy machine are noisy, the ratios much less so.
"""
