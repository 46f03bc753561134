"""A script as many are written: one checkpoint, ``<dir>/ckpt.pt``, rewritten in place.

It writes a zip the way ``torch.save`` does (``archive/data.pkl`` first, the central directory
last), straight to the final name, like nanoGPT's ``torch.save(checkpoint, "ckpt.pt")``. It
resumes from ``RUNAI_ENTRY_RESUME_FROM`` and prints ``resumed <step> from <path>`` (or
``fresh``) and the ``--resume-from`` argument it got, then does what its one argument says:

- ``save``: save the next step, and exit 0;
- ``tear``: start saving the next step, and SIGKILL itself halfway through the write (the
  OOM killer, or the platform's SIGKILL after the grace period);
- ``resave``: save the step it resumed from again, the same bytes (nanoGPT's save after its
  first evaluation on resume), then SIGKILL itself;
- ``resave-new``: the same, with a figure that changes (nanoGPT's re-estimated validation
  loss), so the bytes differ.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import time
import zipfile

#: Enough bytes of "weights" that a kill halfway through leaves a file cut inside its data.
PAYLOAD = 64 << 10


def checkpoint(step: int, loss: float) -> bytes:
    out = io.BytesIO()
    records = {"archive/data.pkl": pickle.dumps({"iter_num": step, "loss": loss}, 2),
               "archive/data/0": bytes([step % 256]) * PAYLOAD, "archive/version": b"3\n"}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in records.items():
            # torch.save's records carry no time: the same state saves to the same bytes.
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), content)
    return out.getvalue()


def load(path: str) -> int:
    with zipfile.ZipFile(path) as archive:
        state = pickle.loads(archive.read("archive/data.pkl"))
    return int(state["iter_num"])


def main(mode: str) -> None:
    directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
    resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
    flag = sys.argv[sys.argv.index("--resume-from") + 1] if "--resume-from" in sys.argv else None
    step = load(resume) if resume else 0
    print(f"resumed {step} from {resume}" if resume else "fresh", f"flag {flag}", flush=True)
    if mode in ("resave", "resave-new"):
        data = checkpoint(step, time.time() if mode == "resave-new" else 0.0)
    else:
        data = checkpoint(step + 1, 0.0)
    with open(os.path.join(directory, "ckpt.pt"), "wb") as f:  # in place, as torch.save does
        if mode == "tear":
            f.write(data[:len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(data)
    if mode.startswith("resave"):
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1])
