"""A VM disk's NBD export as the repository writer's chunk source.

The writer cuts a disk into fixed chunks; this walks the export chunk by chunk:

- with a previous backup's manifest (an incremental), a chunk the dirty bitmap says
  unchanged is not read: it is that manifest's entry (`chunking.Known`, or a hole);
- otherwise only the ranges block status says may hold data are read (several reads in
  flight), and a chunk with none, or that reads as zeros, is a hole.

The previous manifest must describe the same disk geometry (size and chunk size); the
caller checks that and reads in full otherwise.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

from csbs.hypervisor.nbd import NbdExport
from csbs.repository import chunking
from csbs.repository.manifest import Manifest
from csbs.repository.writer import Run

READ_AHEAD = 8  # chunks whose reads are in flight at once


@dataclasses.dataclass(frozen=True, slots=True)
class _Read:
    index: int
    offset: int
    length: int
    ranges: list[tuple[int, int]]
    buffer: bytearray  # the chunk, zeros where no range is read


class ExportChunks:
    """`writer.ChunkSource` over an `NbdExport` (see the module's docstring)."""

    def __init__(self, export: NbdExport, previous: Manifest | None = None) -> None:
        self.export = export
        self.previous = previous
        self.size = export.size
        self.chunks_unchanged = 0

    def runs(self, chunk_size: int) -> Iterator[Run]:
        export = self.export
        size = self.size
        previous = None
        if self.previous is not None:
            if self.previous.chunk_size != chunk_size or self.previous.logical_size != size:
                raise ValueError("the previous manifest is of another disk geometry")
            previous = self.previous.entries()
        queue: collections.deque[Run | _Read] = collections.deque()
        reads = 0
        holes_from = -1  # first chunk of a run of holes not yet yielded

        def release(item: Run | _Read) -> Iterator[Run]:
            nonlocal holes_from
            run = self._finish(item) if isinstance(item, _Read) else item
            if isinstance(run, chunking.Holes):
                if holes_from < 0:
                    holes_from = run.start
                return
            if holes_from >= 0:
                yield chunking.Holes(holes_from, run.index - holes_from)
                holes_from = -1
            yield run

        count = chunking.chunk_count(size, chunk_size)
        for index in range(count):
            offset = index * chunk_size
            length = min(chunk_size, size - offset)
            entry = next(previous) if previous is not None else None
            if previous is not None and not export.changed(offset, length):
                self.chunks_unchanged += 1
                queue.append(
                    chunking.Holes(index, 1)
                    if entry is None
                    else chunking.Known(index, entry, length)
                )
            else:
                ranges = export.data_ranges(offset, length)
                if ranges:
                    buffer = bytearray(length)
                    view = memoryview(buffer)
                    for start, span in ranges:
                        export.prefetch(start, view[start - offset : start - offset + span])
                    queue.append(_Read(index, offset, length, ranges, buffer))
                    reads += 1
                else:
                    queue.append(chunking.Holes(index, 1))
            while queue and (not isinstance(queue[0], _Read) or reads > READ_AHEAD):
                head = queue.popleft()
                if isinstance(head, _Read):
                    reads -= 1
                yield from release(head)
        while queue:
            yield from release(queue.popleft())
        if holes_from >= 0:
            yield chunking.Holes(holes_from, count - holes_from)

    def _finish(self, item: _Read) -> chunking.Data | chunking.Holes:
        """Wait for the reads of one chunk (started in order, so they end in order)."""
        for _ in item.ranges:
            self.export.take()
        if chunking.is_zero(item.buffer):
            return chunking.Holes(item.index, 1)
        return chunking.Data(item.index, bytes(item.buffer))

    def read_chunk(self, index: int, chunk_size: int) -> bytes:
        offset = index * chunk_size
        length = min(chunk_size, self.size - offset)
        return self.export.read(offset, length)
