"""The Run:ai checkpoint guide's Keras example, done right (Keras 3, any backend; torch here).

    runai-entry --checkpoint-dir ./keras-checkpoints --simulate-preempt 15s --simulate-requeue 1 \
        -- python examples/train_keras.py

What the guide's version gets wrong, and what replaces it:

* ``ModelCheckpoint("weights.best.hdf5", save_best_only=True)`` rewrites one file in place: a
  SIGKILL mid-write leaves a torn file, and the resume crashes on it. Worse, "best" is not
  "latest": a requeued run restarts from the best epoch and loses every epoch after it.
  ``PreemptionCheckpoint`` writes ``epoch-NNNNN.weights.h5`` (weights *and* optimizer state)
  under a temporary name and renames it, keeps the last two, and names each file after the epoch
  to resume at.
* ``exit(1)`` inside a SIGTERM handler throws away the epoch in progress and can fire in the
  middle of a save. Here the handler only records the signal; ``fit`` stops at the next batch
  with a checkpoint written, and the script exits 1 afterwards, so Run:ai requeues it.
* ``os.path.isfile("weights.best.hdf5")`` then ``load_weights`` restarts at epoch 0 with old
  weights. ``restore`` loads the newest complete checkpoint and returns the epoch to pass as
  ``initial_epoch``, so the learning-rate schedule and the epoch count carry on.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from runai_entry.training import preemption

# Before the slow imports (Keras and its backend take seconds): a stop signal during start-up is
# recorded, and fit stops after its first batch with a checkpoint, instead of the default
# action killing the process with status 143.
FLAG = preemption()
os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from runai_entry.training.keras import PreemptionCheckpoint  # noqa: E402


class EpochLine(keras.callbacks.Callback):  # type: ignore[misc]
    """One short line per epoch (Keras' own verbose=2 line has no epoch total on resume)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.model.stop_training:  # the stop signal cut this epoch short: not an epoch
            return
        logs = logs or {}
        print(f"epoch {epoch + 1:3d}/{self.epochs}  loss {logs.get('loss', 0):.4f}  "
              f"test accuracy {logs.get('val_accuracy', 0):.1%}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint-dir",
                   default=os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR") or "./keras-checkpoints")
    p.add_argument("--resume-from", help="checkpoint to resume from (runai-entry passes it)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)
    digits = load_digits()  # ships inside scikit-learn: nothing is downloaded
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target
    n_test = len(y) // 5
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    checkpoint = PreemptionCheckpoint(args.checkpoint_dir, keep=2, flag=FLAG)
    initial_epoch = checkpoint.restore(model, args.resume_from)  # 0 when there is nothing to resume
    if initial_epoch:
        print(f"resumed from {os.path.basename(checkpoint.resume_from() or '')} "
              f"at epoch {initial_epoch}", flush=True)
    if FLAG.should_stop():  # preempted while starting: nothing new to save
        print("stop signal during start-up: exiting 1 to be requeued", flush=True)
        return 1
    print(f"training: {len(y_train)} digits, {args.epochs} epochs, from epoch {initial_epoch}",
          flush=True)
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, initial_epoch=initial_epoch,
              validation_data=(x_test, y_test), verbose=0,
              callbacks=[EpochLine(args.epochs), checkpoint])
    if checkpoint.stopped:
        print(f"stop signal: saved {os.path.basename(checkpoint.last_saved or '')}; "
              "exiting 1 to be requeued", flush=True)
        return 1  # "exit with status 1 is important for the Job to return later"
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"finished: {args.epochs} epochs, test accuracy {accuracy:.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
