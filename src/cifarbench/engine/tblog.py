"""TensorBoard logging for a run (``--log tensorboard``): event files in the run folder itself.

Why the run folder: ``tensorboard --logdir studies/NAME`` then finds every run of a study, each under
its own folder name, with no second tree of logs to keep in step with the run folders.

Why the hyperparameters are written by hand instead of ``SummaryWriter.add_hparams``: that method
opens a second writer in a sub-folder named after the current time, so every run would show up twice
in TensorBoard (once with its curves, once as a timestamped run with only the hparams). Writing the
same three hparams summaries through the run's own writer makes the run folder the hparams session.

On resume the writer is opened with ``purge_step``: TensorBoard's reader then drops any point at or
after the first epoch still to train that an earlier process had already written, so a crash between
logging an epoch and saving its checkpoint cannot leave that epoch twice.
"""
from __future__ import annotations

from pathlib import Path

from cifarbench.errors import CifarbenchError

# metrics.csv column -> TensorBoard tag; the "group/" prefix puts train and val side by side
TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val",
    "lr": "lr", "epoch_time": "time/epoch_s", "images_per_sec": "time/images_per_sec",
}
# results.json keys shown as the hparams metrics (skipped when None: no val split, no test, no TTA)
FINAL_METRICS = ("best_val_acc", "val_acc", "test_acc", "val_acc_tta", "test_acc_tta")


class RunLogger:
    """One ``SummaryWriter`` per run: a point per epoch for each metric, hyperparameters at the end."""

    def __init__(self, run_dir: Path, config: dict, start_epoch: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CifarbenchError("--log tensorboard needs TensorBoard: pip install 'cifarbench[tensorboard]'") from None
        self.config = dict(config)
        # steps are epochs (1-based); purge what an earlier process wrote from epoch start_epoch + 1 on
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_epoch + 1 if start_epoch > 0 else None)
        self.last_epoch = start_epoch

    def log_epoch(self, row: dict) -> None:
        epoch = int(row["epoch"])
        for key, tag in TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), epoch)
        self.last_epoch = epoch
        self.writer.flush()  # an epoch is minutes long: show it now, and keep it if the process dies

    def close(self, results: dict | None = None) -> None:
        """Write the hyperparameters with the run's final metrics (when given), then close the writer."""
        if results is not None:
            from torch.utils.tensorboard.summary import hparams

            metrics = {f"hparam/{k}": float(results[k]) for k in FINAL_METRICS if results.get(k) is not None}
            # the hparams plugin takes numbers, strings and bools; None (unset options) is left out
            params = {k: v for k, v in self.config.items() if isinstance(v, (int, float, str, bool))}
            step = int(results.get("epochs_done") or self.last_epoch)
            for summary in hparams(params, metrics):
                self.writer.file_writer.add_summary(summary, step)
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, value, step)
        self.writer.close()
