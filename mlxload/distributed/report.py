"""What one rank's load did: its share of the model, bytes read, peak RSS and time."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlxload.load_report import LoadReport

__all__ = ["RankLoadReport"]


@dataclass
class RankLoadReport(LoadReport):
    """A :class:`~mlxload.load_report.LoadReport` plus where this rank sits and what it read.

    Attributes:
        rank: ``tensor_rank`` if tensor parallel, else ``pipeline_rank``.
        tensor_rank, tensor_size: Position in the tensor-parallel group (0, 1 without one).
        pipeline_rank, pipeline_size: Position in the pipeline group (0, 1 without one).
        layers: ``[start, stop)`` of the decoder layers this rank runs.
        checkpoint_bytes: Tensor bytes of the whole checkpoint (all shards).
        shards_opened: Shard files this rank opened.
        shards_downloaded: Shard files this rank fetched from the Hub.
        bytes_fetched: Bytes this rank fetched with HTTP Range requests (``fetch="ranges"``).
        io_bytes: Bytes the process read from files during the load (``rchar`` delta; config,
            index and headers included), ``None`` where the OS doesn't say.
        peak_rss_bytes: Peak resident memory of the process when the load finished.
        blocks: Parameter counts by how they were read: ``whole``, ``rows``, ``columns``,
            ``sliced`` (whole then cut), ``derived`` (recomputed by ``shard``).
    """

    rank: int = 0
    tensor_rank: int = 0
    tensor_size: int = 1
    pipeline_rank: int = 0
    pipeline_size: int = 1
    layers: tuple[int, int] = (0, 0)
    checkpoint_bytes: int = 0
    shards_opened: int = 0
    shards_downloaded: int = 0
    bytes_fetched: int = 0
    io_bytes: int | None = None
    peak_rss_bytes: int = 0
    blocks: dict[str, int] = field(default_factory=dict)

    @property
    def fraction_read(self) -> float:
        """``bytes_read / checkpoint_bytes``."""
        return self.bytes_read / self.checkpoint_bytes if self.checkpoint_bytes else 0.0
