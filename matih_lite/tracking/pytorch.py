"""PyTorch logging: a helper for plain training loops and a Lightning callback.

Plain loop::

    logger = StepLogger()
    for step, batch in enumerate(loader):
        loss = ...
        logger.log(step, loss=loss, accuracy=acc)   # tensors or floats

Lightning: ``trainer = Trainer(callbacks=[matih_lite.tracking.pytorch.lightning_callback()])``.
"""

from __future__ import annotations

from typing import Any


def _scalar(value: Any) -> float:
    item = getattr(value, "item", None)
    return float(item() if callable(item) else value)


class StepLogger:
    """Logs loss and metrics per step into the active run; ``every`` thins the points."""

    def __init__(self, every: int = 1, prefix: str = "") -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.every = every
        self.prefix = prefix

    def log(self, step: int, **values: Any) -> None:
        if step % self.every:
            return
        import matih_lite as ml

        ml.log_metrics({f"{self.prefix}{k}": _scalar(v) for k, v in values.items()}, step=step)


def lightning_callback() -> Any:
    """A Lightning ``Callback`` logging hyperparameters, every training step's loss, and epoch metrics."""
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:
        from pytorch_lightning.callbacks import Callback  # the older package name

    import matih_lite as ml

    class MatihCallback(Callback):
        def on_train_start(self, trainer, pl_module):
            hparams = dict(getattr(pl_module, "hparams", {}) or {})
            if hparams:
                ml.log_params({k: str(v)[:6000] for k, v in hparams.items()})

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None:
                ml.log_metric("train_loss", _scalar(loss), step=trainer.global_step)

        def on_validation_epoch_end(self, trainer, pl_module):
            metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
            if metrics:
                ml.log_metrics(metrics, step=trainer.global_step)

    return MatihCallback()
