"""intersection_meta: meta-RL (Directed-MAML and baselines) for two-vehicle intersection crossings."""
__version__ = "0.1.0"
