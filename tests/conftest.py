"""Test-session settings: offscreen SDL rendering (before pygame is imported) and single-threaded torch
(on small CPU machines torch's intra-op threads make the tiny ops of these tests several times slower)."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")

import torch

torch.set_num_threads(1)
