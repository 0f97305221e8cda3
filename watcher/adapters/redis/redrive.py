"""The store's redriving records: claim an entry off its queue, record its Job, settle it.

A mixin of `watcher.adapters.redis.store.RedisStore` (store.py is at its size limit);
docs/redrive.md has the argument. One record per entry being redriven
(``Keys.redrive_record``), indexed in ``Keys.redriving``; each change is one Lua script:

    redrive_claim     the entry leaves its stream and indexes, the record gets it (byte for
                      byte, still sealed) and the sealed plan: before any POST
    redrive_created   the created Job's uid goes on the record
    redrive_release   a Job surely not created (one begin, a definite refusal): back on the queue
    redrive_archive   the Job succeeded: the entry moves to the queue's archive stream
    redrive_failed    the Job failed: its new dead letter is written (dead_letter.lua's body)
                      and the record removed, in one step

The CLI calls these unfenced (it is not a leader), the daemon with its term, like the other
write scripts. The plan is sealed like a ticket, its place the record's key: a Redis writer
can neither point a record at another namespace or name nor carry a plan to another entry.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any, Final

from redis.commands.core import AsyncScript

from watcher.adapters.redis import codec, scripts
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.fencing import Fence
from watcher.adapters.redis.guard import Guard, as_bytes, text
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.seal import ForgedEntry, Seal, dead_letter_place
from watcher.core.model import DeadLetter, JobRef, WriteResult
from watcher.core.redrive import (
    Claim,
    ClaimStatus,
    RedrivePlan,
    RedriveRecord,
    decode_plan,
    encode_plan,
)

__all__ = ["ARCHIVE_MAXLEN", "KIND_REDRIVE_PLAN", "ArchivedEntry", "RedriveRecords"]

KIND_REDRIVE_PLAN: Final = "redrive_plan"

ARCHIVE_MAXLEN: Final = 10_000
"""Entries kept per queue's archive (approximately: whole stream nodes). The archive says what
was redriven and succeeded; the Jobs themselves and the logs say the rest."""

_PACKAGE: Final = __name__.rpartition(".")[0]


def _body(name: str) -> str:
    return files(_PACKAGE).joinpath("scripts", name).read_text(encoding="utf-8")


def _fenced(*names: str, indexed: bool = False) -> str:
    """A write script behind the fence prelude (and the index functions), bodies in order."""
    parts = [scripts.FENCE_PRELUDE, *([scripts.DLQ_INDEX] if indexed else [])]
    return "\n".join([*parts, *(_body(n) for n in names)])


# Read at import, like scripts.py: a missing file fails at start, not mid-redrive.
CLAIM: Final = _fenced("redrive_claim.lua", indexed=True)
CREATED: Final = _fenced("redrive_created.lua")
RELEASE: Final = _fenced("redrive_release.lua", indexed=True)
ARCHIVE: Final = _fenced("redrive_archive.lua")
FAILED: Final = _fenced("redrive_failed.lua", "dead_letter.lua", indexed=True)

ArchivedEntry = tuple[str, str, str, DeadLetter | str]
"""(archive stream id, the entry id it was, the Job "<ns>/<name>/<uid>", the letter or what is
wrong with it)."""


def split_entry_id(entry_id: str) -> tuple[str, str]:
    """(queue, stream id) of ``<queue>/<stream-id>``."""
    queue, _, sid = entry_id.rpartition("/")
    return queue, sid


class RedriveRecords:
    """Mixin: needs the store's ``_redis``, ``_keys``, ``_guard``, ``_seal``, ``_fence``."""

    _redis: RedisClient
    _keys: Keys
    _guard: Guard
    _seal: Seal
    _fence: Fence
    # RedisStore's: the dead_letter.lua call this extends, and how its reply reads.
    _dead_letter_call: Callable[[DeadLetter], tuple[list[Any], list[Any]]]
    _write_result: Callable[[str, Any], WriteResult]

    def _register_redrive_scripts(self) -> None:
        self._redrive: dict[str, AsyncScript] = {
            name: self._redis.register_script(source)
            for name, source in (
                ("claim", CLAIM),
                ("created", CREATED),
                ("release", RELEASE),
                ("archive", ARCHIVE),
                ("failed", FAILED),
            )
        }

    async def claim_redrive(self, entry_id: str, plan: RedrivePlan | None) -> Claim:
        """Take `entry_id` off its queue into a redriving record holding `plan`; or, when a
        record exists already, count one more begin and answer its own plan (`plan` None:
        only resume)."""
        k = self._keys
        queue, sid = split_entry_id(entry_id)
        record = k.redrive_record(entry_id)
        sealed = (
            b"" if plan is None else self._seal.seal(KIND_REDRIVE_PLAN, record, encode_plan(plan))
        )
        if plan is None:
            sid = "0-0"  # matches no entry: a record or nothing
        reply: Any = await self._fence.call(
            "redrive_claim",
            self._redrive["claim"],
            keys=[k.dlq(queue), k.dlq_indexes(queue), k.redriving, record],
            args=[sid, entry_id, sealed, STREAM_FIELD],
        )
        status, raw_plan, begins = ClaimStatus(int(reply[0])), as_bytes(reply[1]), int(reply[2])
        if status not in (ClaimStatus.CLAIMED, ClaimStatus.RESUMED):
            return Claim(status)
        opened, error, _ = self._open_plan(entry_id, raw_plan)
        return Claim(status, opened, begins, error)

    async def redrive_created(self, entry_id: str, uid: str) -> int:
        """Record the created Job's uid: 1 done, 0 the record is gone (settled), -1 another uid
        is recorded."""
        reply: Any = await self._fence.call(
            "redrive_created",
            self._redrive["created"],
            keys=[self._keys.redrive_record(entry_id)],
            args=[uid],
        )
        return int(reply)

    async def release_redrive(self, entry_id: str, letter: DeadLetter) -> str | None:
        """Put a claimed entry back on its queue (a new stream id, returned) when its Job was
        surely not created: only this run began it and no uid is recorded. None: kept."""
        k = self._keys
        queue, _ = split_entry_id(entry_id)
        reply: Any = await self._fence.call(
            "redrive_release",
            self._redrive["release"],
            keys=[
                k.dlq(queue),
                k.queues,
                *k.dlq_entry_indexes(queue, letter.failure_class, letter.job.namespace),
                k.redriving,
                k.redrive_record(entry_id),
            ],
            args=[entry_id, queue, STREAM_FIELD],
        )
        return f"{queue}/{text(reply[1])}" if int(reply[0]) == 1 else None

    async def redriving_ids(self, *, limit: int = 10_000) -> list[str]:
        """Entry ids with a redriving record, oldest claim first."""
        async with self._guard("redriving"):
            raw: Any = await self._redis.zrange(self._keys.redriving, 0, limit - 1)
        return [as_bytes(m).decode(errors="replace") for m in raw]

    async def redrive_record(self, entry_id: str) -> RedriveRecord | None:
        """The record of `entry_id`, its entry and plan opened (each None, with the error, when
        its seal or its bytes do not check out); None when there is no record."""
        async with self._guard("redrive_record"):
            raw: Any = await self._redis.hgetall(self._keys.redrive_record(entry_id))
        if not raw:
            return None
        fields = {as_bytes(key).decode(errors="replace"): as_bytes(v) for key, v in raw.items()}
        plan, plan_error, plan_forged = self._open_plan(entry_id, fields.get("plan", b""))
        letter: DeadLetter | None = None
        error, forged = plan_error, plan_forged
        queue, _ = split_entry_id(entry_id)
        try:
            letter = codec.decode_dead_letter(
                self._seal.open(
                    codec.KIND_DEAD_LETTER, dead_letter_place(self._keys, queue), fields["entry"]
                )
            )
        except KeyError:
            error = "the record holds no entry"
        except CorruptEntry as exc:
            error, forged = str(exc), forged or isinstance(exc, ForgedEntry)
        try:
            begins = int(fields.get("begins", b"0"))
        except ValueError:
            begins = 0
        uid = fields.get("uid", b"").decode(errors="replace")
        return RedriveRecord(entry_id, letter, plan, uid, begins, error, forged)

    async def archive_redriven(self, entry_id: str, job: JobRef) -> int:
        """The redriven Job `job` succeeded: archive the entry. 1 done, 0 settled before, -1 the
        record names another Job."""
        k = self._keys
        queue, _ = split_entry_id(entry_id)
        reply: Any = await self._fence.call(
            "redrive_archive",
            self._redrive["archive"],
            keys=[k.redrive_record(entry_id), k.redriving, k.dlq_archive(queue)],
            args=[
                entry_id,
                job.uid,
                f"{job.namespace}/{job.name}/{job.uid}",
                ARCHIVE_MAXLEN,
                STREAM_FIELD,
            ],
        )
        return int(reply[0])

    async def dead_letter_redriven(self, entry_id: str, letter: DeadLetter) -> WriteResult | None:
        """The redriven Job ``letter.job`` failed: write `letter` and remove the record in one
        step. None: no record, or it names another Job (nothing written)."""
        k = self._keys
        keys, args = self._dead_letter_call(letter)
        reply: Any = await self._fence.call(
            "redrive_failed",
            self._redrive["failed"],
            keys=[*keys, k.redrive_record(entry_id), k.redriving],
            args=[*args, entry_id, letter.job.uid],
        )
        if int(reply[0]) == -1:
            return None
        return self._write_result(letter.job.uid, reply)

    async def archived(self, queue: str, *, count: int) -> list[ArchivedEntry]:
        """The newest `count` archived entries of `queue`, newest first, each opened."""
        async with self._guard("archived"):
            raw: Any = await self._redis.xrevrange(self._keys.dlq_archive(queue), count=count)
        place = dead_letter_place(self._keys, queue)
        out: list[ArchivedEntry] = []
        for sid, fields in raw:
            got = {as_bytes(key).decode(errors="replace"): as_bytes(v) for key, v in fields.items()}
            try:
                shown: DeadLetter | str = codec.decode_dead_letter(
                    self._seal.open(codec.KIND_DEAD_LETTER, place, got.get(STREAM_FIELD, b""))
                )
            except CorruptEntry as exc:
                shown = str(exc)
            of = got.get("of", b"").decode(errors="replace")
            job = got.get("job", b"").decode(errors="replace")
            out.append((text(sid), of, job, shown))
        return out

    def _open_plan(self, entry_id: str, raw: bytes) -> tuple[RedrivePlan | None, str, bool]:
        place = self._keys.redrive_record(entry_id)
        try:
            return decode_plan(self._seal.open(KIND_REDRIVE_PLAN, place, raw)), "", False
        except ForgedEntry as exc:
            return None, f"redrive plan: {exc}", True
        except (CorruptEntry, ValueError) as exc:
            return None, f"redrive plan: {exc}", False
