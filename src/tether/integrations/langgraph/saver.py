"""A LangGraph checkpointer that holds one thread in memory for one tether step.

tether owns durability: the run's state (checkpointed by tether after every
step) holds the graph's last checkpoint as JSON. Each step loads it into a
:class:`StepSaver`, lets LangGraph run one superstep against it, and takes the
newest checkpoint back out. Nothing is written anywhere else, so a step that
fails or is interrupted leaves nothing behind: its re-run starts from the same
checkpoint, and tether's journal replays what it already did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)

from tether.integrations.langgraph.codec import decode, encode, revive
from tether.integrations.langgraph.memo import Memo

_Key = tuple[str, str]  # (checkpoint namespace, checkpoint id)


class StepSaver(BaseCheckpointSaver[int]):
    """One thread's checkpoints, in memory, for the length of one step.

    Channel versions are integers counted up from the last one (LangGraph's
    default), so a re-run step produces the same versions.
    """

    def __init__(self, thread: str) -> None:
        super().__init__()
        self.thread = thread
        self._saved: dict[_Key, tuple[Checkpoint, CheckpointMetadata, str | None]] = {}
        self._writes: dict[_Key, dict[tuple[str, int], tuple[str, str, Any]]] = {}
        self._latest: dict[str, str] = {}  # namespace -> newest checkpoint id
        self._memo = Memo(revive)  # what restore decoded, re-encoded by snapshot if unchanged

    # -- tether's side: the step's start and end ------------------------------------
    def restore(self, saved: dict[str, Any]) -> None:
        """Load the checkpoint :meth:`snapshot` returned (the root namespace's)."""
        memo = self._memo
        checkpoint = decode(saved["checkpoint"], memo)
        key = ("", checkpoint["id"])
        self._saved[key] = (checkpoint, decode(saved["metadata"], memo), None)
        self._writes[key] = {(task, idx): (task, channel, decode(value, memo))
                             for task, idx, channel, value in saved.get("writes", [])}
        self._latest[""] = checkpoint["id"]

    def snapshot(self) -> dict[str, Any] | None:
        """The root namespace's newest checkpoint and its pending writes, as JSON."""
        cid = self._latest.get("")
        if cid is None:
            return None
        checkpoint, metadata, _ = self._saved[("", cid)]
        memo = self._memo
        writes = [[task, idx, channel, encode(value, memo)]
                  for (task, idx), (_, channel, value) in self._writes.get(("", cid), {}).items()]
        return {"checkpoint": encode(dict(checkpoint), memo),
                "metadata": encode(dict(metadata), memo), "writes": writes}

    # -- LangGraph's side: BaseCheckpointSaver -----------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config.get("configurable", {})
        ns = conf.get("checkpoint_ns", "")
        cid = get_checkpoint_id(config) or self._latest.get(ns)
        if cid is None or (ns, cid) not in self._saved:
            return None
        checkpoint, metadata, parent = self._saved[(ns, cid)]
        here = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ns,
                                 "checkpoint_id": cid}}
        up = None if parent is None else {"configurable": {
            "thread_id": self.thread, "checkpoint_ns": ns, "checkpoint_id": parent}}
        writes = [(task, channel, value)
                  for (_, _), (task, channel, value) in sorted(self._writes.get((ns, cid), {}).items())]
        return CheckpointTuple(here, checkpoint, metadata, up, writes)  # type: ignore[arg-type]

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        ns = (config or {}).get("configurable", {}).get("checkpoint_ns", "")
        ids = sorted((cid for (n, cid) in self._saved if n == ns), reverse=True)
        for cid in ids[:limit]:
            got = self.get_tuple({"configurable": {"checkpoint_ns": ns, "checkpoint_id": cid}})
            if got is not None:
                yield got

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        conf = config["configurable"]
        ns = conf.get("checkpoint_ns", "")
        self._saved[(ns, checkpoint["id"])] = (checkpoint, metadata, conf.get("checkpoint_id"))
        self._latest[ns] = checkpoint["id"]
        return {"configurable": {"thread_id": self.thread, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        key = (conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        kept = self._writes.setdefault(key, {})
        for idx, (channel, value) in enumerate(writes):
            # LangGraph's special writes (errors, interrupts) have fixed negative indexes
            # and replace one another; a task's ordinary writes are kept once.
            at = WRITES_IDX_MAP.get(channel, idx)
            if at >= 0 and (task_id, at) in kept:
                continue
            kept[(task_id, at)] = (task_id, channel, value)

    def delete_thread(self, thread_id: str) -> None:
        self._saved.clear()
        self._writes.clear()
        self._latest.clear()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)
