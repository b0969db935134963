"""Replay viewer for recorded episodes: ``python -m viz.replay`` (pygame; imports no torch unless a checkpoint
is given). ``viz.draw`` holds the pure drawing functions."""
