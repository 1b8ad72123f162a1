"""The Optuna side of a sweep: samplers, the study's storage and its metadata, and dead workers' trials.

The storage is Optuna's journal file in the sweep's folder by default, or any Optuna storage URL
(PostgreSQL, MySQL, SQLite: RDB storages get heartbeats, so another machine's dead worker is noticed).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnndsl.lang.errors import UsageError
from cnndsl.lang.imports import standalone_text
from cnndsl.lang.space import Space

FORMAT = "cnndsl.sweep/1"
SAMPLERS = ("tpe", "nsga2", "random", "grid")
#: each objective's Optuna direction; `latency@B` (the forward of a batch of B) too, see `direction`
OBJECTIVES = {"accuracy": "maximize", "loss": "minimize", "macs": "minimize", "params": "minimize",
              "memory": "minimize", "latency": "minimize", "throughput": "maximize"}
MAX_LATENCY_BATCH = 4096


def latency_batch(objective: str) -> int | None:
    """The batch a latency objective times: 1 for `latency`, B for `latency@B`; None for other objectives."""
    if objective == "latency":
        return 1
    head, at, batch = objective.partition("@")
    if head == "latency" and at and batch.isdigit() and 1 <= int(batch) <= MAX_LATENCY_BATCH:
        return int(batch)
    return None


#: How each objective is named on the plots.
TITLES = {"accuracy": "validation accuracy", "loss": "validation loss", "macs": "MACs", "params": "parameters",
          "memory": "activation memory", "throughput": "training images/s"}


def title_of(objective: str) -> str:
    """An objective's name on a plot: `latency@32` is "latency, batch 32 (ms)"."""
    batch = latency_batch(objective)
    return TITLES[objective] if batch is None else f"latency, batch {batch} (ms)"


def direction(objective: str) -> str | None:
    """An objective's Optuna direction (None: not an objective cnndsl knows)."""
    return OBJECTIVES.get(objective) or ("minimize" if latency_batch(objective) else None)



class SweepError(Exception):
    """A sweep that cannot start or go on: a one-line message (exit status 1)."""


def make_sampler(name: str, seed: int, space: Space, directions: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    continuous = [d.name for d in space.dimensions if not d.discrete or (d.kind == "int" and d.log)]
    if continuous:
        raise UsageError(f"--sampler grid needs lists of values; {', '.join(continuous)} "
                         f"{'is a range' if len(continuous) == 1 else 'are ranges'} of numbers",
                         "use {a, b, c} domains for a grid, or another sampler")
    grid = {d.name: list(d.values()) for d in space.dimensions}
    return optuna.samplers.GridSampler(grid, seed=seed)


def check_journal_file(path: Path) -> None:
    """A UsageError unless `path` may hold a sweep's Optuna journal: missing (it is created), empty, or a journal
    already (its first line an Optuna journal record). A user's other file is never appended to, and none of its
    bytes is shown; a folder or a device is refused by name."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise UsageError(f"--storage {path}: {err.strerror}", "give a journal file's path") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"--storage {path} is a folder", "give a journal file's path, e.g. sweeps/shared.journal")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"--storage {path} is not a regular file", "give a journal file's path")
    if info.st_size == 0:
        return
    try:
        with path.open("rb") as stream:
            first = stream.readline(1 << 16)
    except OSError:
        first = b""
    if not _is_journal_record(first):
        raise UsageError(f"--storage {path} is not an Optuna journal (its first line is not a journal record)",
                         "give a new file's path or a sweep's journal; cnndsl never writes into files it did not "
                         "create")


def _is_journal_record(line: bytes) -> bool:
    """Whether a line of a journal file is one of Optuna's records (a JSON object with an `op_code`)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def repair_journal(path: Path) -> str | None:
    """Check a journal file before Optuna reads or appends to it, under Optuna's own lock (other workers of
    the study wait): a last record cut off mid-line (a writer killed, a disk full) is removed, so that new
    records are not appended to half of one, and a note saying so is returned; a damaged record with
    records after it is a SweepError naming the line and how to keep the study up to it. Every record is
    read once (a journal is small: about 1 KB per trial)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with path.open("rb+") as journal:
            good, number = 0, 0
            for number, line in enumerate(journal, start=1):  # noqa: B007 - `number` is used after the loop
                if not line.endswith(b"\n"):
                    break  # the last line, cut off
                if not _is_journal_record(line):
                    raise SweepError(f"{path}: line {number} is not a journal record (the file is damaged); keep "
                                     f"the study's first {number - 1} records with `head -n {number - 1} {path} > "
                                     "NEW.journal` and give --storage NEW.journal")
                good += len(line)
            else:
                return None
            lost = journal.seek(0, os.SEEK_END) - good
            journal.truncate(good)
        return (f"{path}: its last record was cut off mid-line ({lost} bytes, a write that never finished); "
                f"removed it, the study goes on from its {number - 1} complete records")
    finally:
        lock.release()


def open_storage(url: str | None, directory: Path, note: Callable[[str], None] = print) -> Any:
    """Optuna storage: the sweep's own journal file, or an RDB URL (heartbeats mark dead workers' trials).
    A journal file is checked first (`repair_journal`); `note` hears of a repair."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    def journal(path: Path) -> Any:
        repaired = repair_journal(path)
        if repaired:
            note(repaired)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))

    if url is None:
        return journal(directory / "study.journal")
    if url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        try:
            for attempt in range(5):
                try:
                    return optuna.storages.RDBStorage(url, heartbeat_interval=15, grace_period=60,
                                                      engine_kwargs={"pool_pre_ping": True})
                except Exception as err:  # noqa: BLE001
                    # Workers starting together on an empty database race to create Optuna's tables; the
                    # loser sees a unique-key violation and simply tries again (the tables exist by then).
                    text = str(err).lower()
                    if attempt == 4 or not ("unique" in text or "already exists" in text or "duplicate" in text):
                        raise
                    time.sleep(0.3 + 0.4 * attempt)
        except ImportError:
            raise SweepError(f"cannot open the study storage {redact(url)}: its database driver is not installed "
                             "(for PostgreSQL: pip install 'cnndsl[postgres]')") from None
        except Exception as err:  # noqa: BLE001 - sqlalchemy's many connection errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepError(f"cannot open the study storage {redact(url)}: {first[:300]}") from None
    if url.endswith((".journal", ".log")) or "://" not in url:
        path = Path(url).expanduser()
        check_journal_file(path)
        return journal(path)
    raise UsageError(f"--storage {redact(url)}: not a storage cnndsl knows",
                     "give sqlite:///PATH, postgresql://USER@HOST/DB, mysql://... or a journal file path")


def redact(url: str) -> str:
    """A storage URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}" if ":" in credentials else url


def _spec_digest(space: Space) -> str:
    fixed = sorted((k, v[1].text) for k, v in space.fixed.items())
    return hashlib.sha256((standalone_text(space.program) + json.dumps(fixed)).encode()).hexdigest()


def open_study(space: Space, storage: Any, name: str, directions: list[str], sampler: Any,
               objectives: Sequence[str], shown_storage: str) -> Any:
    """Create or load the study; refuse one of the same name made from another spec or other objectives."""
    import optuna

    digest = _spec_digest(space)
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                    load_if_exists=True)
    except ValueError as err:  # the study exists with other directions
        raise SweepError(f"study {name!r} in {shown_storage} exists with other objectives ({err}); "
                         "choose another --study") from None
    except Exception as err:  # noqa: BLE001 - storage errors of every kind
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SweepError(f"cannot open study {name!r} in {shown_storage}: {first[:300]}") from None
    # One attribute, written in one call: a second worker starting at the same moment reads all of it or none.
    mine = {"format": FORMAT, "spec_sha256": digest, "objectives": list(objectives)}
    found = study.user_attrs.get("cnndsl")
    if found is None:
        study.set_user_attr("cnndsl", mine)
        study.set_user_attr("spec", standalone_text(space.program))
    elif found.get("spec_sha256") != digest:
        raise SweepError(f"study {name!r} in {shown_storage} was made from another spec (or other --set "
                         "bindings); choose another --study, or give the spec it was made from")
    elif list(found.get("objectives", [])) != list(objectives):
        raise SweepError(f"study {name!r} in {shown_storage} optimizes {','.join(found.get('objectives', []))}, "
                         f"not {','.join(objectives)}; choose another --study")
    return study


def mark_dead_trials(study: Any, directory: Path) -> int:
    """Trials left RUNNING by a killed worker of this machine: their run directory is not locked by any
    process (a live trainer holds its run's lock), so they are marked failed and their members re-sampled."""
    import optuna

    from cnndsl.training.rundir import RunDir

    dead = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_dir = trial.user_attrs.get("run_dir")
        owner = trial.user_attrs.get("host")
        if owner != host() or (run_dir is None and trial.user_attrs.get("pid") is None):
            continue  # another machine's (Optuna's heartbeat, with an RDB storage) or not started
        pid = trial.user_attrs.get("pid")
        alive = (RunDir(Path(run_dir)).is_locked() if run_dir and Path(run_dir).exists()
                 else pid is not None and _process_alive(pid))
        if not alive:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            dead += 1
    return dead


def enqueue_resumes(study: Any) -> int:
    """Put back every trial whose training was cut off (its worker killed, or Ctrl-C) and whose run directory
    holds a run: one enqueued trial per such trial, with the same member, that resumes the run from its newest
    checkpoint (`_Sweep.objective` reads the `resumes` attribute). A trial already put back is not put back
    again, so the same command run twice, or by two workers, resumes each run once."""
    import optuna

    from cnndsl.training.rundir import RunDir

    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get("resumes") for t in trials}
    put_back = 0
    for trial in trials:
        run_dir = trial.user_attrs.get("run_dir")
        if (trial.state != optuna.trial.TrialState.FAIL or trial.user_attrs.get("status") != "training"
                or trial.number in taken or not run_dir or not RunDir(Path(run_dir)).holds_run()):
            continue
        study.enqueue_trial(dict(trial.params), user_attrs={"resumes": trial.number})
        put_back += 1
    return put_back


def host() -> str:
    """This machine's name, recorded with each trial (a dead worker is looked for on its own machine)."""
    import socket

    return socket.gethostname()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trained_count(study: Any) -> int:
    """Trials whose member was trained, to the end or until its pruner stopped it (across every worker):
    what `--trials` counts."""
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                    optuna.trial.TrialState.PRUNED))
               if t.user_attrs.get("status") in ("trained", "pruned"))
