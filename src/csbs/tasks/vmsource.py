"""A VM disk's NBD export as the repository writer's chunk source.

The writer cuts a disk into fixed chunks; this walks the export chunk by chunk:

- with a previous backup's manifest (an incremental), a chunk the dirty bitmap says
  unchanged is not read: it is that manifest's entry (`chunking.Known`, or a hole);
- otherwise only the ranges block status says may hold data are read, and a chunk with
  none, or that reads as zeros, is a hole.

Reads are synchronous (`NbdExport.read_ranges`; `hypervisor.nbd` says why); libnbd lets other
threads run meanwhile, so the writer's hashing and uploads go on.

The previous manifest must describe the same disk geometry (size and chunk size); the
caller checks that and reads in full otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

from csbs.hypervisor.nbd import NbdExport
from csbs.repository import chunking
from csbs.repository.manifest import Manifest
from csbs.repository.writer import Run


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
        holes_from = -1  # first chunk of a run of holes not yet yielded
        count = chunking.chunk_count(size, chunk_size)
        for index in range(count):
            offset = index * chunk_size
            length = min(chunk_size, size - offset)
            entry = next(previous) if previous is not None else None
            run: Run
            if previous is not None and not export.changed(offset, length):
                self.chunks_unchanged += 1
                run = (
                    chunking.Holes(index, 1)
                    if entry is None
                    else chunking.Known(index, entry, length)
                )
            else:
                ranges = export.data_ranges(offset, length)
                data = export.read_ranges(offset, length, ranges) if ranges else None
                run = (
                    chunking.Holes(index, 1)
                    if data is None or chunking.is_zero(data)
                    else chunking.Data(index, data)
                )
            if isinstance(run, chunking.Holes):
                if holes_from < 0:
                    holes_from = index
                continue
            if holes_from >= 0:
                yield chunking.Holes(holes_from, index - holes_from)
                holes_from = -1
            yield run
        if holes_from >= 0:
            yield chunking.Holes(holes_from, count - holes_from)

    def read_chunk(self, index: int, chunk_size: int) -> bytes:
        offset = index * chunk_size
        length = min(chunk_size, self.size - offset)
        return self.export.read(offset, length)
