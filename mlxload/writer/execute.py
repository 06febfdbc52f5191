"""Carry out a :class:`~.plan.WritePlan`: checks first, then copy, flush, rename, index.

Each output is written to ``.<name>.mlxload-partial`` in its destination directory: header
first, then tensors file-to-file (:func:`~.copy.copy_range`), flushed, and renamed to its
final name with ``os.replace``; the index goes last, the same way. A journal
(``.<name>.mlxload-journal``) records the flushed progress so a killed run can be rerun and
continue after the last completed tensor. On an error the temporary file and its journal are
removed (and the journals of outputs already committed) and a :class:`~.errors.WriterError`
is raised; a final name only ever holds a complete file.

Every source is opened before the first write and read only through those descriptors, each
output's sources are checked unchanged once it is copied (a file rewritten in place keeps its
inode, so the descriptor would read the new bytes), and an output may not replace a source
file it is made from (align alone rewrites a file from itself), so the bytes copied are always
the planned ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxload.errors import FileChangedError
from mlxload.fd_write import pwrite_all
from mlxload.file_identity import file_identity, identity_change
from mlxload.free_space import check_free_space, human_bytes
from mlxload.open_files import ensure_open_files, opening_shard, require_open_files
from mlxload.work_names import work_path
from mlxload.writer.copy import copy_range
from mlxload.writer.errors import (
    InsufficientSpaceError,
    OutputBusyError,
    OutputExistsError,
    OutputIsSourceError,
    WriteFailedError,
    write_failed,
)
from mlxload.writer.flush import WRITEBACK_CHUNK, data_sync, full_fsync, start_writeback
from mlxload.writer.journal import JournalState, load_journal, remove_quietly, save_journal
from mlxload.writer.layout import Placed
from mlxload.writer.lock import lock_outputs, lock_path
from mlxload.writer.plan import OutputPlan, WritePlan

__all__ = ["PAUSE_ENV", "Progress", "WriteResult", "execute", "journal_path", "temp_path"]

Progress = Callable[[int, int, str], None]
"""``progress(done_bytes, total_bytes, tensor_name)``, called after each tensor and after each
16 MiB of a larger one."""

PAUSE_ENV = "MLXLOAD_WRITER_PAUSE_AFTER"
"""Test hook: after this many tensors copied in a run, flush the journal and sleep."""

# Journal checkpoints flush the data (fdatasync), so not too often; a kill loses at most this.
_CHECKPOINT_BYTES = 1 << 30
_CHECKPOINT_SECONDS = 5.0
_WORK_DESCRIPTORS = 4
"""Descriptors open beside the locks and sources: the file written, its journal, a directory
synced, an abandoned output's lock."""
_SPACE_MARGIN = 16 << 20
"""Free space kept beyond an output's bytes (journals, index, block rounding), at most."""


@dataclass
class WriteResult:
    """What a write did.

    Attributes:
        outputs: Final paths of the files written (or already complete), in order.
        index: The index written, if any.
        tensors: Tensors in the outputs.
        total_bytes: Tensor bytes in the outputs.
        copied_bytes: Tensor bytes copied by this run.
        resumed_tensors, resumed_bytes: Work a previous, interrupted run had done.
        unchanged: Files left alone because they already had the planned layout.
        removed: Shards of the checkpoint the write replaced (see ``WritePlan.replaces``).
        companions: Config and tokenizer files copied next to a split or aligned copy.
    """

    outputs: list[Path] = field(default_factory=list)
    index: Path | None = None
    tensors: int = 0
    total_bytes: int = 0
    copied_bytes: int = 0
    resumed_tensors: int = 0
    resumed_bytes: int = 0
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    companions: list[Path] = field(default_factory=list)


def temp_path(final: Path) -> Path:
    """Where an output is written before it is complete."""
    return work_path(final, "partial")


def journal_path(final: Path) -> Path:
    """The resume journal of an output."""
    return work_path(final, "journal")


def execute(
    plan: WritePlan,
    *,
    force: bool = False,
    progress: Progress | None = None,
    finish: Callable[[], list[Path]] | None = None,
) -> WriteResult:
    """Write the plan's outputs and index.

    The outputs are written under hidden work names and only then renamed into place, all
    together, once the files they replace are removed (an in-place align swaps in each file as
    it is done: its old and new files hold the same tensors). So a run that fails or is
    interrupted never leaves a directory where part of a new checkpoint stands beside part of
    the one it replaces; once every output is complete, a failure keeps them for the rerun.

    Args:
        plan: From :mod:`~.plan`.
        force: Replace outputs that already exist.
        progress: Called with (done bytes, total bytes, tensor name) after each tensor, and
            after each 16 MiB of a larger one (a 4 GB embedding would say nothing for seconds).
        finish: Called once the outputs and index are in place, before the resume journals
            are dropped (so a rerun after an interrupt there does it again); its result is
            ``WriteResult.companions``.

    Returns:
        A :class:`WriteResult`.

    Raises:
        OutputExistsError: an output exists and neither ``force`` nor ``plan.in_place``.
        OutputBusyError: another process is writing one of the outputs.
        OutputIsSourceError: an output would replace a source file it is read from (only
            align may rewrite a file from itself).
        InsufficientSpaceError: the destination lacks the space needed (nothing written; on
            macOS only a warning, as purgeable space counts as used there).
        TooManyOpenFilesError: the open-file limit can't be raised enough to hold a lock
            per output and every source open (nothing written).
        WriteFailedError: writing failed (disk full, size limit, I/O error).
        FileChangedError: a source changed (truncated, replaced, rewritten) while being
            copied; the output it went into is not written.
    """
    _check_sources(plan)
    locked = [o.path for o in plan.outputs] + [p for p in (plan.index_path,) if p is not None]
    locked += plan.replaces  # another run may be writing them: never removed under it
    # A run killed after finishing some files of an in-place align left their lock files; they
    # are unchanged now, so taking (and so removing) their locks is the only way to sweep them.
    locked += [p for p in plan.unchanged if lock_path(p).exists()]
    _preflight(plan, force)  # refuse before creating any directory for the lock files
    _require_descriptors(plan, len(locked))
    result = None
    try:
        with lock_outputs(locked):
            # Again under the lock: another run may have finished or progressed meanwhile.
            result = _execute_locked(plan, _preflight(plan, force, again=True), progress, finish)
    except KeyboardInterrupt:
        if result is None:
            raise
        # The work is done: a Ctrl-C while the locks were let go changes nothing (the rerun it
        # would ask for is refused: the outputs exist).
    return result


def _require_descriptors(plan: WritePlan, locks: int) -> None:
    """Room to hold every lock and source open together (a split into 300 shards holds 300
    locks), refused before anything is written when the hard limit leaves none.

    Raises:
        TooManyOpenFilesError: says to raise ``ulimit -n``.
    """
    sources = len({p for output in plan.outputs for p in output.sources.values()})
    require_open_files(
        locks + sources + _WORK_DESCRIPTORS,
        f"nothing was written: this {plan.kind} holds a lock on each of the {locks} files it "
        f"writes, and its {sources} source file(s), open at once",
    )


def _remove_abandoned_work(finals: list[Path]) -> None:
    """Remove the temporary files and journals of outputs no run will finish (see
    ``WritePlan.abandoned``), leaving any another process is writing now."""
    for final in finals:
        try:
            with lock_outputs([final]):
                remove_quietly(temp_path(final), journal_path(final))
        except (OutputBusyError, WriteFailedError):
            continue  # another run's live work, or a directory we can't write: leave it


def _preflight(
    plan: WritePlan, force: bool, *, again: bool = False
) -> dict[Path, tuple[str, JournalState | None]]:
    states = _journal_states(plan)
    if _finished_earlier(plan, states):  # every output counts as done, journal or not
        for o in plan.outputs:
            digest = states[o.path][0]
            states[o.path] = (
                digest,
                JournalState(digest, len(o.tensors), o.data_size, complete=True),
            )
    _check_overwrite(plan, states, force or plan.in_place)
    _check_space(plan, states, warn=not again)
    return states


def _execute_locked(
    plan: WritePlan,
    states: dict[Path, tuple[str, JournalState | None]],
    progress: Progress | None,
    finish: Callable[[], list[Path]] | None,
) -> WriteResult:
    result = WriteResult(
        tensors=sum(len(o.tensors) for o in plan.outputs),
        total_bytes=plan.total_size,
        unchanged=list(plan.unchanged),
    )
    run = _Run(plan, progress, result)
    written: list[OutputPlan] = []  # complete under their work names, not yet renamed
    committed: list[Path] = []
    finishing = False  # every output is complete: from here on, a failure keeps them
    try:
        # Every source is opened before the first write and read through these descriptors
        # only, so the data always comes from the files as they were planned.
        run.open_sources()
        for output in plan.outputs:
            try:
                output.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                _reraise(e, output.path)
            if run.write(output, states[output.path]):
                written.append(output)
            else:
                committed.append(output.path)  # by an earlier run that was interrupted
            if plan.in_place:
                _commit(written, committed)
        finishing = True
        modes: dict[Path, int] = {}  # of the files replaced, for their successors
        if written and not plan.in_place and _could_mix(plan):
            modes = _clear_old_checkpoint(plan, written)
        _commit(written, committed, modes, kept=True)
        if plan.index is not None and plan.index_path is not None:
            _write_small_atomically(plan.index_path, plan.index, modes.get(plan.index_path))
            result.index = plan.index_path
        for stale in plan.replaces:  # only with force: _check_overwrite refuses otherwise
            remove_quietly(stale)
            result.removed.append(stale)
        _remove_abandoned_work(plan.abandoned)
        if finish is not None:
            result.companions = finish()
    except KeyboardInterrupt as e:
        # Work files and journals stay: rerunning continues where this run stopped.
        staged = [] if plan.in_place or finishing else [temp_path(o.path) for o in written]
        if staged:
            names = ", ".join(p.name for p in staged[:3]) + (", ..." if len(staged) > 3 else "")
            add_note(
                e,
                f"{len(staged)} finished output(s) wait under hidden work names in "
                f"{staged[0].parent} ({names}) for the rerun to put in place; to start over "
                "instead, delete those too, with their .mlxload-journal files",
            )
        raise
    except BaseException as e:
        if finishing:
            # The old checkpoint may be gone already: the new one, complete, must stay (work
            # files and journals too), so that the rerun puts the rest in place.
            add_note(
                e,
                f"the {plan.kind}'s outputs are complete and kept (renamed into place, or under "
                "hidden work names beside them): run the same command again to finish",
            )
            raise
        # A failed run is not resumed: drop its work files, and the journals of the outputs
        # an earlier run committed (so a rerun doesn't take them for its own).
        remove_quietly(*(journal_path(p) for p in committed))
        remove_quietly(*(f(o.path) for o in written for f in (temp_path, journal_path)))
        raise
    finally:
        run.close()
    result.outputs = [o.path for o in plan.outputs]
    # Unchanged files too: an earlier, killed in-place align may have left their journals.
    journals = [journal_path(p) for p in result.outputs + plan.unchanged]
    try:
        remove_quietly(*journals)
    except KeyboardInterrupt:  # the work is done: a Ctrl-C now must not leave it half tidied
        remove_quietly(*journals)
    return result


def _could_mix(plan: WritePlan) -> bool:
    """Whether the directory could show a loader old and new files side by side while the
    outputs are renamed: a set of several files, an index, or another checkpoint's files.
    (One file replacing one file is a single atomic rename.)"""
    return len(plan.outputs) > 1 or plan.index_path is not None or bool(plan.replaces)


def _clear_old_checkpoint(plan: WritePlan, written: list[OutputPlan]) -> dict[Path, int]:
    """Remove what the new files replace before the first of them is renamed into place.

    They are complete and flushed by now, so nothing is lost; and however a kill interrupts
    the renames that follow, the directory holds no mix: the old files or the new ones
    (missing some, which the loader refuses, naming them) and no index that spans both.
    The index goes first, so that the old set is never left indexed but incomplete.

    Returns:
        The permissions of the files removed, for the files taking their names (a kill
        before those renames loses them: the rerun's files get the default mode).
    """
    old = [plan.index_path] if plan.index_path is not None else []
    old += [o.path for o in written] + list(plan.replaces)
    modes = {}
    for path in old:
        with contextlib.suppress(OSError):
            modes[path] = stat.S_IMODE(os.stat(path).st_mode)
    remove_quietly(*(p for p in old if os.path.lexists(p)))
    for directory in {p.parent for p in old}:
        _fsync_dir(directory)
    return modes


def _commit(
    written: list[OutputPlan],
    committed: list[Path],
    modes: dict[Path, int] | None = None,
    *,
    kept: bool = False,
) -> None:
    """Rename the written outputs into place (emptying ``written``), then make that durable.
    Each takes the permissions of the file it replaces (``modes``: of one removed already).
    ``kept``: a failure leaves the output's work file for a rerun (the error says so)."""
    directories = set()
    while written:
        output = written[0]
        tmp = temp_path(output.path)
        try:
            _keep_mode(tmp, output.path, (modes or {}).get(output.path))
            os.replace(tmp, output.path)
        except OSError as e:
            if kept:
                raise write_failed(e, output.path, kept=True) from e
            _reraise(e, output.path)
        written.pop(0)
        committed.append(output.path)
        directories.add(output.path.parent)
    for directory in directories:
        _fsync_dir(directory)


def _check_sources(plan: WritePlan) -> None:
    """Refuse an output that is one of the source files other outputs (or itself, unless
    it is its only source: align) are read from.

    Replacing such a file midway would leave a directory mixing new and old shards that no
    rerun could resume from; only ``align`` rewrites files in place, each from itself alone.
    """
    identity: dict[tuple[int, int], Path] = {}
    for src in {p for output in plan.outputs for p in output.sources.values()}:
        st = os.stat(src)
        identity[(st.st_dev, st.st_ino)] = src
    for output in plan.outputs:
        try:
            st = os.stat(output.path)
        except OSError:
            continue
        src = identity.get((st.st_dev, st.st_ino))
        if src is None:
            continue
        own = set(output.sources.values())
        if plan.kind == "align" and len(own) == 1 and os.path.samefile(next(iter(own)), src):
            continue  # align: the file is rewritten from itself only
        same = "" if _same_path(output.path, src) else f" (the same file as {src})"
        raise OutputIsSourceError(
            f"{output.path} is a source file of this {plan.kind}{same}: writing it would "
            "replace tensor data still to be read; write to another directory or file name"
            + ("" if plan.kind == "align" else " (mlxload align rewrites files in place)")
        )


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _journal_states(plan: WritePlan) -> dict[Path, tuple[str, JournalState | None]]:
    states = {}
    for output in plan.outputs:
        digest = output.digest()
        states[output.path] = (digest, load_journal(journal_path(output.path), digest))
    return states


def _is_done(output: OutputPlan, state: JournalState | None) -> bool:
    """Committed by an earlier run that died before finishing the rest."""
    return (
        state is not None
        and state.tensors_done == len(output.tensors)
        and not temp_path(output.path).exists()
        and output.path.is_file()
        and output.path.stat().st_size == output.size
    )


def _finished_earlier(plan: WritePlan, states: dict) -> bool:
    """Whether an earlier run of this very command put every output and the index in place and
    was killed while it dropped its journals (the rerun was refused: "already exists").

    One journal of this plan is left (its digest names these sources and this layout), and the
    index on disk is the one this plan writes: it is written only once every output is in place.
    """
    if plan.index is None or plan.index_path is None or plan.in_place:
        return False
    if not any(_is_done(o, states[o.path][1]) for o in plan.outputs):
        return False
    try:
        if plan.index_path.read_bytes() != plan.index:
            return False
    except OSError:
        return False
    return all(
        o.path.is_file() and o.path.stat().st_size == o.size and not temp_path(o.path).exists()
        for o in plan.outputs
    )


def _check_overwrite(plan: WritePlan, states: dict, allowed: bool) -> None:
    if allowed:
        return
    done = [_is_done(o, states[o.path][1]) for o in plan.outputs]
    # lexists: a dangling symlink is there too (someone made it; replacing it needs --force)
    clash = [o.path for o, d in zip(plan.outputs, done, strict=True) if not d and _there(o.path)]
    if plan.index_path is not None and _there(plan.index_path) and not all(done):
        clash.append(plan.index_path)
    if plan.replaces:
        names = ", ".join(p.name for p in plan.replaces[:3])
        raise OutputExistsError(
            f"{plan.replaces[0].parent} holds files of another checkpoint ({names}"
            f"{' ...' if len(plan.replaces) > 3 else ''}); pass --force (force=True) to replace "
            "that checkpoint (its files are removed once this one is complete)"
        )
    if clash:
        names = ", ".join(str(p) for p in clash[:3]) + (" ..." if len(clash) > 3 else "")
        raise OutputExistsError(
            f"{names} already exist{'s' if len(clash) == 1 else ''}; pass --force "
            "(force=True) to replace"
        )


def _there(path: Path) -> bool:
    return os.path.lexists(path)


def _check_space(plan: WritePlan, states: dict, *, warn: bool = True) -> None:
    needed: dict[int, list] = {}
    for output in plan.outputs:
        state = states[output.path][1]
        if _is_done(output, state):
            continue
        resumable = state.bytes_done if state and temp_path(output.path).exists() else 0
        anchor = _existing_ancestor(output.path.parent)
        entry = needed.setdefault(os.stat(anchor).st_dev, [anchor, 0])
        entry[1] += output.size - resumable
    for anchor, need in needed.values():
        margin = _space_margin(need)
        check_free_space(
            anchor,
            need + margin,
            lambda free, anchor=anchor, need=need, margin=margin: InsufficientSpaceError(
                errno.ENOSPC,
                f"not enough free space in {anchor}: the output needs {human_bytes(need)} "
                f"(+{human_bytes(margin)} margin) but only {human_bytes(free)} is free "
                f"({human_bytes(need + margin - free)} short); free some space or write "
                "elsewhere",
            ),
            warn=warn,
        )


def _space_margin(need: int) -> int:
    """1 MiB plus 1/32 of the output, up to :data:`_SPACE_MARGIN`: a fixed 16 MiB refused a
    20 KB merge onto a disk with 5 MB free."""
    return min(_SPACE_MARGIN, (1 << 20) + need // 32)


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


class _Run:
    """State shared across the outputs of one execute(): open sources, progress, test hook."""

    def __init__(self, plan: WritePlan, progress: Progress | None, result: WriteResult) -> None:
        self.plan = plan
        self.progress = progress
        self.result = result
        self.total = plan.total_size
        self.done = 0
        self.fds: dict[Path, int] = {}
        self.copied_tensors = 0
        self.unflushed = 0  # bytes copied since the last writeback kick
        pause = os.environ.get(PAUSE_ENV)
        self.pause_after = int(pause) if pause else None

    def open_sources(self) -> None:
        """Open every source file now, before anything is written (see :func:`execute`).

        Raises:
            FileChangedError: a source is no longer the file whose header was planned from.
        """
        count = len({p for output in self.plan.outputs for p in output.sources.values()})
        ensure_open_files(count)
        for output in self.plan.outputs:
            for path in output.sources.values():
                if path in self.fds:
                    continue
                with opening_shard(str(path), count):
                    self.fds[path] = fd = os.open(path, os.O_RDONLY)
                planned = output.source_identity.get(path)
                if planned is not None and identity_change(planned, file_identity(os.fstat(fd))):
                    raise FileChangedError(
                        f"{path}: source changed after its header was read (replaced or "
                        "modified); nothing was written — run the command again"
                    )

    def _check_unchanged(self, output: OutputPlan) -> None:
        """Refuse ``output`` if a source changed since it was planned: a rewrite in place
        (``O_TRUNC`` and write, same inode) is read through the open descriptor, so the bytes
        copied may mix two versions of the file. Its status-change time alone is not taken for
        a change: a ``chown -R`` or a sync client's extended attribute mid-run would fail a
        long split for nothing (a rewrite that puts its time back restarts a resume instead).

        Raises:
            FileChangedError: naming the source that changed.
        """
        for path in dict.fromkeys(output.sources.values()):
            planned = output.source_identity.get(path)
            if planned is None:
                continue
            now = file_identity(os.fstat(self.fds[path]))
            change = identity_change(planned, now, status=False)
            if change is not None:
                raise FileChangedError(
                    f"{path}: source {change} while it was being copied, so {output.path.name} "
                    "could mix its old and new tensors and was not written — run the command "
                    "again"
                )

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def source_fd(self, path: Path) -> int:
        return self.fds[path]  # opened up front by open_sources

    def write(self, output: OutputPlan, digest_state: tuple[str, JournalState | None]) -> bool:
        """Write ``output`` completely under its work name (see :func:`_commit`).

        Returns:
            False when an earlier run already put it in place.
        """
        digest, state = digest_state
        if _is_done(output, state):
            self._skip(output, len(output.tensors), output.data_size)
            return False
        tmp, jpath = temp_path(output.path), journal_path(output.path)
        try:
            if state is None or not _temp_holds(tmp, output, state):
                remove_quietly(tmp, jpath)
                state = JournalState(digest)
            elif state.tensors_done:
                state.resumes += 1
                self._skip(output, state.tensors_done, state.bytes_done)
            self._write_temp(output, tmp, jpath, state)
            self._check_unchanged(output)
            state.complete = True  # all flushed: after a kill from here on the file is done
            save_journal(jpath, state)
        except KeyboardInterrupt as e:
            # Temp file and journal stay: rerunning continues from the journal.
            if tmp.exists():
                add_note(
                    e,
                    f"the partial output is kept as {tmp}; to start over instead, delete it "
                    f"and {jpath.name}",
                )
            raise
        except BaseException as e:
            remove_quietly(tmp, jpath)
            _reraise(e, output.path)
        return True

    def _skip(self, output: OutputPlan, tensors: int, nbytes: int) -> None:
        self.result.resumed_tensors += tensors
        self.result.resumed_bytes += nbytes
        self.done += nbytes
        if self.progress is not None and tensors:
            self.progress(self.done, self.total, output.tensors[tensors - 1].name)

    def _write_temp(self, output: OutputPlan, tmp: Path, jpath: Path, state: JournalState) -> None:
        fresh = state.tensors_done == 0
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
        try:
            if fresh:
                pwrite_all(fd, output.header, 0)  # the first checkpoint creates the journal
            else:
                os.ftruncate(fd, output.data_start + state.bytes_done)
            self._copy_tensors(output, fd, jpath, state)
            full_fsync(fd)
        except KeyboardInterrupt:
            self._checkpoint(fd, jpath, state, output)
            raise
        finally:
            os.close(fd)

    def _copy_tensors(self, output: OutputPlan, fd: int, jpath: Path, state: JournalState) -> None:
        last_bytes, last_time = state.bytes_done, time.monotonic()
        self.unflushed = 0
        for tensor in output.tensors[state.tensors_done :]:
            self._copy(self.source_fd(output.sources[tensor.name]), fd, output, tensor)
            state.tensors_done += 1
            state.bytes_done += tensor.nbytes
            self.done += tensor.nbytes
            self.result.copied_bytes += tensor.nbytes
            self.copied_tensors += 1
            if self.progress is not None:
                self.progress(self.done, self.total, tensor.name)
            now = time.monotonic()
            if (
                state.bytes_done - last_bytes >= _CHECKPOINT_BYTES
                or now - last_time >= _CHECKPOINT_SECONDS
            ):
                self._checkpoint(fd, jpath, state, output)
                last_bytes, last_time = state.bytes_done, now
            if self.pause_after is not None and self.copied_tensors == self.pause_after:
                self._checkpoint(fd, jpath, state, output)
                time.sleep(3600)  # test hook: the test kills us here

    def _copy(self, src_fd: int, fd: int, output: OutputPlan, tensor: Placed) -> None:
        """Copy one tensor in chunks, starting writeback of each chunk as it lands."""
        dst = output.data_start + tensor.begin
        for start in range(0, tensor.nbytes, WRITEBACK_CHUNK):
            n = min(WRITEBACK_CHUNK, tensor.nbytes - start)
            try:
                copy_range(src_fd, fd, tensor.src_offset + start, dst + start, n)
            except FileChangedError as e:
                raise FileChangedError(
                    f"{output.sources[tensor.name]}: tensor {tensor.name!r}: {e}; the file was "
                    "truncated during the copy: restore it, then run the "
                    "command again"
                ) from None
            self.unflushed += n
            if self.unflushed >= WRITEBACK_CHUNK:
                start_writeback(fd, dst + start + n - self.unflushed, self.unflushed)
                self.unflushed = 0
            if self.progress is not None and start + n < tensor.nbytes:  # (its end: the caller)
                self.progress(self.done + start + n, self.total, tensor.name)

    @staticmethod
    def _checkpoint(fd: int, jpath: Path, state: JournalState, output: OutputPlan) -> None:
        # The journal may only claim bytes that are on disk, so flush the data first. The byte
        # count is derived from the tensor count: a Ctrl-C between the two counter updates
        # must not leave a journal whose counts disagree.
        state.bytes_done = _bytes_before(output, state.tensors_done)
        data_sync(fd)
        save_journal(jpath, state)


def _bytes_before(output: OutputPlan, tensors: int) -> int:
    """Tensor bytes of the output's first ``tensors`` tensors (they are laid out in order)."""
    return output.tensors[tensors].begin if tensors < len(output.tensors) else output.data_size


def _temp_holds(tmp: Path, output: OutputPlan, state: JournalState) -> bool:
    """The temp file exists and is at least as long as the journal's completed part."""
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        return False
    if not 0 <= state.tensors_done <= len(output.tensors):
        return False
    if state.bytes_done != _bytes_before(output, state.tensors_done):
        return False  # inconsistent (hand-edited, or written by a buggy version): start over
    return size >= output.data_start + state.bytes_done


def _keep_mode(tmp: Path, final: Path, mode: int | None = None) -> None:
    """Give ``tmp`` the permissions of the ``final`` it is about to replace (a private 0600
    checkpoint rewritten in place must not become world-readable), or ``mode`` when given.
    Done at the rename, not at creation: a read-only mode on the temporary file would stop a
    rerun from resuming it."""
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(final).st_mode)
        except FileNotFoundError:
            return
    os.chmod(tmp, mode)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_small_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(fd, data, 0)
            full_fsync(fd)
        finally:
            os.close(fd)
        _keep_mode(tmp, path, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        remove_quietly(tmp)
        _reraise(e, path)


def add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)`` (Python 3.11+), by hand on 3.10: the CLI prints the notes."""
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:  # pragma: no cover - Python 3.10
        e.__notes__ = [*getattr(e, "__notes__", []), note]


def _reraise(e: BaseException, path: Path) -> None:
    """Raise an OS error as a WriteFailedError; re-raise mlxload errors and others as they are."""
    if isinstance(e, (FileChangedError, WriteFailedError)) or not isinstance(e, OSError):
        raise e
    raise write_failed(e, path) from e
