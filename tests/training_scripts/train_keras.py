"""Keras 3 (torch backend) fit with PreemptionCheckpoint, for the Keras test.

Prints ``initial_epoch K``, ``epoch begin E`` per epoch, then ``stopped <last saved>`` or
``finished``. Batches sleep a little so the test's SIGTERM lands mid-epoch. It beats
(``Heartbeat``), so runai-entry measures start-up and the last step.

    python train_keras.py DIRECTORY [EPOCHS]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # type: ignore[import-untyped]
import numpy as np

from runai_entry.training.keras import Heartbeat, PreemptionCheckpoint


class Trace(keras.callbacks.Callback):  # type: ignore[misc]
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        print(f"epoch begin {epoch}", flush=True)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        time.sleep(0.02)


def main() -> int:
    directory = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    ckpt = PreemptionCheckpoint(directory, keep=2)
    initial_epoch = ckpt.restore(model)
    print(f"initial_epoch {initial_epoch}", flush=True)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        callbacks=[ckpt, Trace(), Heartbeat()],
    )
    if ckpt.stopped:
        print(f"stopped {os.path.basename(ckpt.last_saved or '')}", flush=True)
        return 1
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
