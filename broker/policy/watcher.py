"""Hot reload: keep the last good policy, swap a valid new one in atomically.

The swap is one attribute assignment (atomic under the GIL): a decision that already read
`.current` finishes on the policy it started with; the next one sees the new policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from broker.policy._load import MAX_POLICY_BYTES, load_policy_text
from broker.policy._policy import Policy
from broker.policy.lint import policy_warnings, shared_batch_users
from broker.yamlfile import PolicyError, Problem, parse_yaml, read_text

log = logging.getLogger(__name__)
MAX_PROBLEMS_LOGGED = 20
"""A refused reload is one log line naming at most this many of its problems (`szb status` and
`szb policy history` have them all)."""
SETTLE_S = 2.0
"""How long a file changed in place must stay as it is before it is read: one written in parts (an
editor saving in place, `cat > policy.yaml` from a slow pipe) is not put in force half-written. A
file replaced by rename (a new inode: atomic) is read at once."""


@dataclass(frozen=True)
class PolicyLoad:
    """One attempt to load the policy file: what was read, and whether it went into force."""

    hash: str
    """The policy hash when it loaded (`Policy.hash`); the SHA-256 of the file's text when refused."""
    result: str
    """`loaded` (now in force), `unchanged` (same hash as in force) or `refused` (invalid)."""
    source: str
    content: str
    time: datetime
    errors: tuple[str, ...] = ()
    """`FILE:LINE:COL: error: ...` lines of a refused file."""
    inputs: str = ""
    """`Policy.inputs_digest` of a policy read (the files it refers to); '' when refused."""
    files: tuple[tuple[str, str], ...] = ()
    """`Policy.files`: (name, text) of the files it refers to; none when refused."""

    def refused(self, problems: Sequence[Problem]) -> PolicyLoad:
        """This valid file refused all the same (a site its live jobs run at is gone): recorded as a
        refused reload is, under its text's hash (the broker made no decision with it)."""
        digest = hashlib.sha256(self.content.encode("utf-8")).hexdigest()
        return replace(self, hash=digest, result="refused", errors=tuple(map(str, problems)), inputs="",
                       files=())


def refused_load(path: Path, problems: Sequence[Problem], time: datetime) -> PolicyLoad:
    """The record of a refused policy file: its text as read now (hashed as a loaded one is)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return PolicyLoad(digest, "refused", str(path), text, time, tuple(map(str, problems)))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PolicyWatcher:
    """Holds the current policy; `reload()` on a change of the file or of the files it refers to
    (mtime polling), or on SIGHUP."""

    def __init__(
        self,
        path: Path,
        *,
        on_swap: Callable[[Policy], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        settle_s: float = SETTLE_S,
    ) -> None:
        """Load `path` now; raises PolicyError when even the first policy is invalid. `poll` reads a
        change once the files have stayed as they are for `settle_s` seconds."""
        self.path = path
        self._settle_s = settle_s
        self._pending: tuple[tuple[tuple[int, ...] | None, ...], float] | None = None
        """The changed files' stat as last polled, and when (monotonic) it was first seen so."""
        self._on_swap = on_swap
        self.on_load: Callable[[PolicyLoad], None] | None = None
        self.vet: Callable[[Policy, str], list[Problem]] = lambda policy, text: []
        """What a valid file must also satisfy to go into force (the broker's live jobs' sites)."""
        """Told about every load attempt (audit trail, metrics); called from the loading thread."""
        self._clock = clock
        self._lock = threading.Lock()
        self._vet_refused: tuple[Policy, str] | None = None
        """A valid file refused only by `vet` (jobs still run at a site it drops): tried again."""
        policy, text = self._read()
        self._current = policy
        self.first_load = PolicyLoad(policy.hash, "loaded", str(path), text, clock(),
                                     inputs=policy.inputs_digest, files=policy.files)
        self.last_refused: PolicyLoad | None = None
        """The last refused file, while the file on disk stays invalid."""
        self._mtime = self._stat()
        self.last_problems: list[Problem] = []

    def _read(self) -> tuple[Policy, str]:
        """The policy and the exact text it was made from (PolicyError when invalid)."""
        text = read_text(self.path, "policy", MAX_POLICY_BYTES)  # (errors named at their position)
        policy = load_policy_text(text, str(self.path))
        problems = self.vet(policy, text)
        if problems:
            self._vet_refused = (policy, text)
            raise PolicyError(problems)
        for warning in policy_warnings(policy, parse_yaml(text, str(self.path)), str(self.path)):
            log.warning("policy %s: %s", policy.hash[:12], warning)  # valid, but not what it seems to say
        for note in shared_batch_users(policy):
            log.warning("policy %s: %s", policy.hash[:12], note)
        return policy, text

    @property
    def current(self) -> Policy:
        """The policy in force (read it once per decision)."""
        return self._current

    def _stat(self) -> tuple[tuple[int, ...] | None, ...]:
        """mtime, size and inode of the policy file and of every file the policy in force refers to."""
        out: list[tuple[int, ...] | None] = []
        for path in (self.path, *map(Path, self._current.inputs)):
            try:
                st = path.stat()  # follows symlinks: a re-pointed one is a new file
            except OSError:
                out.append(None)
                continue
            # The inode tells a file swapped in by rename or symlink even with the old mtime and size.
            out.append((st.st_mtime_ns, st.st_size, st.st_dev, st.st_ino))
        return tuple(out)

    def reload(self) -> list[Problem]:
        """Load the file again; swap when valid, else keep the last good policy and log why."""
        with self._lock:
            seen, self._mtime = self._mtime, self._stat()
            self._pending = None
            self._vet_refused = None
            try:
                policy, text = self._read()
            except PolicyError as exc:
                self.last_problems = exc.problems
                self.last_refused = refused_load(self.path, exc.problems, self._clock())
                digest = self.last_refused.hash[:12]
                fields = {"event": "reload", "result": "refused", "policy_hash": digest,
                          "source": str(self.path)}
                shown = [str(p) for p in exc.problems[:MAX_PROBLEMS_LOGGED]]  # one event, one line
                more = len(exc.problems) - len(shown)
                log.error("policy reload refused: keeping policy %s: %s%s", self._current.hash[:12],
                          " | ".join(shown), f" | ... and {more} more" if more else "", extra=fields)
                self._tell(self.last_refused)
                return exc.problems
            except Exception:  # the check could not be made (the store away): the next poll tries again
                self._mtime = seen
                raise
            self.last_problems = []
            mended, self.last_refused = self.last_refused, None
            if policy.version != self._current.version:  # the file, or a file it refers to, changed
                same_text = policy.hash == self._current.hash
                self._current = policy
                log.info(
                    "policy %s in force (from %s%s)",
                    policy.hash[:12],
                    self.path,
                    "; a file it refers to changed" if same_text else "",
                    extra={"event": "reload", "result": "loaded", "policy_hash": policy.hash[:12],
                           "source": str(self.path)},
                )
                self._tell(PolicyLoad(policy.hash, "loaded", str(self.path), text, self._clock(),
                                      inputs=policy.inputs_digest, files=policy.files))
                if self._on_swap is not None:
                    self._on_swap(policy)
            else:
                if mended is not None:  # the refusal logged as an error is over: say so
                    fields = {"event": "reload", "result": "mended", "policy_hash": policy.hash[:12],
                              "source": str(self.path)}
                    log.info("policy file %s mended: the policy in force, %s, again; its refusal is over",
                             self.path, policy.hash[:12], extra=fields)
                self._tell(PolicyLoad(policy.hash, "unchanged", str(self.path), text, self._clock(),
                                      inputs=policy.inputs_digest, files=policy.files))
            return []

    def _tell(self, load: PolicyLoad) -> None:
        if self.on_load is None:
            return
        try:
            self.on_load(load)
        except Exception:  # recording the audit trail must never stop a reload
            log.exception("could not record policy load %s", load.hash[:12])

    def changed(self) -> bool:
        """Whether the mtime or size of the file, or of a file it refers to, differs from the last load."""
        return self._stat() != self._mtime

    def _settled(self, now: tuple[tuple[int, ...] | None, ...]) -> bool:
        """Whether the change to `now` is over: the files have stayed so for `settle_s` since a poll
        first saw them so, or each changed one was replaced by rename (a new inode, written whole) or
        last written `settle_s` ago or more."""
        clock = time.monotonic()
        if self._pending is None or self._pending[0] != now:
            self._pending = (now, clock)  # (still being written, maybe: seen again before it is read)
        if clock - self._pending[1] >= self._settle_s:
            return True
        age_ns = (time.time() - self._settle_s) * 1e9
        return all(
            st is not None and (was is None or st[2:] != was[2:] or st[0] <= age_ns)
            for st, was in zip(now, self._mtime, strict=False)
            if st != was
        )

    def poll(self) -> list[Problem] | None:
        """Reload if the file changed and has stopped changing (`settle_s`), or if what refused it last
        is over (its jobs at a site it drops have ended: the file is the same, the broker's state is
        not); None otherwise."""
        now = self._stat()
        if now != self._mtime:
            # A file read the moment it changes may be half-written (the rest still to come).
            return self.reload() if self._settled(now) else None
        refused = self._vet_refused
        if refused is not None and not self.vet(*refused):
            return self.reload()
        return None

    async def watch(self, interval_s: float = 2.0) -> None:
        """Poll the file until cancelled (run it as an asyncio task); a poll that fails (the store
        away while a file is checked against the live jobs) is tried again, never the end of it."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.poll)
            except Exception as exc:
                if not failing:
                    log.warning("policy file %s not checked: %s; trying again", self.path, exc)
                failing = True
            else:
                failing = False

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Reload on SIGHUP: through the running loop when given, else a plain signal handler."""
        if loop is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload))
        else:
            signal.signal(signal.SIGHUP, lambda _sig, _frame: self.reload())
