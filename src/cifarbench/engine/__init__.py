"""Training engine: in-memory device loader, train/evaluate loop, checkpoints, DDP."""
from cifarbench.engine.trainer import Interrupted, evaluate, evaluate_run, train, train_one_epoch

__all__ = ["train", "evaluate_run", "evaluate", "train_one_epoch", "Interrupted"]
