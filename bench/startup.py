"""Start-up: the supervisor's exec → the job's exec, against tini, dumb-init and the interpreter.

``probe exec-stamp SUPERVISOR... probe stamp``: the first probe stamps CLOCK_MONOTONIC and execs
the supervisor, which starts the second probe, whose first instruction stamps again. The
difference is the supervisor's start-up as the job sees it. References: the same measurement for
a Python that does nothing but exec the probe (the floor for any Python supervisor), and
``python -c pass`` from exec to exit (stamped when the benchmark's waitpid returns), the yardstick
of the target.

runai-entry is measured from two installs: the repository's editable install (``pip install -e``;
with PYTHONDONTWRITEBYTECODE=1, as here, its own modules are compiled from source at every start),
and a regular install (``pip install /repo`` into a fresh venv in /tmp, run without
PYTHONDONTWRITEBYTECODE as an image build would, so pip writes the .pyc files).
And on two paths: no option (``runai-entry -- JOB``: click is not imported) and an option
(``runai-entry --grace-period 30s JOB``: click parses it). Peers alternate in random order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import common

TARGET_RATIO = 3.0


def installed_copy() -> str:
    """A regular (non-editable) install of the repository in a fresh venv; its runai-entry."""
    venv = os.path.join(common.temp_dir("venv"), "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # As an image build would: without PYTHONDONTWRITEBYTECODE, so pip writes the .pyc files.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "--compile",
                          common.REPO],
                         capture_output=True, text=True,
                         env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {common.REPO} failed:\n{pip.stderr}")
    compiled = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c",
         "import os, runai_entry; d = os.path.dirname(runai_entry.__file__); "
         "print(len(os.listdir(os.path.join(d, '__pycache__'))))"],
        capture_output=True, text=True, cwd="/")  # not the repository: it would import that
    print(f"regular install: {compiled.stdout.strip() or 'no'} .pyc files in runai_entry/"
          "__pycache__", flush=True)
    return os.path.join(venv, "bin", "runai-entry")


def one(argv: list[str], env: dict[str, str]) -> float:
    """Stamp → the child's stamp, or → exit when there is no child stamp (python -c pass)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    out, _ = proc.communicate()
    done = common.monotonic_ns()
    stamps = dict(line.split()[:2] for line in out.decode().splitlines())
    if proc.returncode != 0 or "E" not in stamps:
        raise RuntimeError(f"{argv}: exit {proc.returncode}, output {out!r}")
    end = int(stamps["S"]) if "S" in stamps else done
    return (end - int(stamps["E"])) / 1e6


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("start-up", args)
    reps = 5 if args.quick else 100
    probe = common.probe()
    stamp = [probe, "exec-stamp"]
    child = [probe, "stamp"]
    print("installing a regular (non-editable) copy in a fresh venv ...", flush=True)
    installed = installed_copy()
    env = dict(os.environ, RUNAI_ENTRY_LOG_LEVEL="warning")
    py = common.PYTHON
    variants = {
        "runai-entry -- (editable)": [common.RUNAI_ENTRY, "--", *child],
        "runai-entry --opt (editable)": [common.RUNAI_ENTRY, "--grace-period", "30s", *child],
        "runai-entry -- (installed)": [installed, "--", *child],
        "runai-entry --opt (installed)": [installed, "--grace-period", "30s", *child],
        "tini": [common.TINI, "-s", "--", *child],
        "dumb-init": [common.DUMB_INIT, *child],
        "python exec floor": [py, "-c", "import os, sys; os.execv(sys.argv[1], sys.argv[1:])",
                              *child],
        "python -c pass": [py, "-c", "pass"],
    }
    print(common.machine_load())
    for argv in variants.values():  # warm the page cache (and nothing else: no .pyc is written)
        one([*stamp, *argv], env)
    series: dict[str, list[float]] = {label: [] for label in variants}
    for _, label in common.interleaved(variants, reps):
        series[label].append(one([*stamp, *variants[label]], env))
    stats = common.print_stats(f"exec → job exec (python -c pass: exec → exit), {reps} runs",
                               "ms", series, baseline="python -c pass")
    ref = stats["python -c pass"]["median"]
    for label in ("runai-entry -- (editable)", "runai-entry --opt (editable)",
                  "runai-entry -- (installed)", "runai-entry --opt (installed)"):
        s = stats[label]
        report.row(
            label.replace("runai-entry ", "") + ": median / p99",
            {"runai-entry": common.cell(s, "ms"), "tini": common.cell(stats["tini"], "ms"),
             "dumb-init": common.cell(stats["dumb-init"], "ms"),
             "ratio": f"{common.ratio(s['median'], ref)} of python -c pass "
                      f"({ref:.1f} ms); python exec floor "
                      f"{stats['python exec floor']['median']:.1f} ms"},
            f"≤ {TARGET_RATIO:g}× python -c pass",
            "pass" if s["median"] <= TARGET_RATIO * ref else "FAIL",
        )
    report.note(f"{reps} runs per variant, interleaved; PYTHONDONTWRITEBYTECODE="
                f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; " + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
