"""One rank of the distributed-loading tests (run by ``mlx.launch``, not by pytest).

Usage: ``distributed_rank.py {probe|tensor|tensor-ranges|pipeline}[-refused] CHECKPOINT OUT_DIR``

With ``-refused`` the load is expected to fail: the rank writes its error's class and message
to ``OUT_DIR/rank-<r>.json`` and stops.

``tensor-ranges`` loads :data:`HUB_SPEC` from the Hub stand-in that ``HF_ENDPOINT`` names, with
``fetch="ranges"`` and a Hub cache of the rank's own (as on its own machine); CHECKPOINT is the
same checkpoint on disk, for the reference.

Writes ``OUT_DIR/rank-<r>.json`` (the rank's load report, plus whether its parameters and
logits equal those of ``load_model`` + mlx-lm's own ``shard``/``pipeline`` in this same job)
and ``OUT_DIR/logits-<r>.npy`` (float32 logits for the tests' fixed prompt).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

PROMPT = [1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 2]
HUB_SPEC = "hf://acme/llama-tp"


def _same(a, b) -> bool:
    pa, pb = dict(tree_flatten(a.parameters())), dict(tree_flatten(b.parameters()))
    return pa.keys() == pb.keys() and all(
        pa[k].dtype == pb[k].dtype and mx.array_equal(pa[k], pb[k]).item() for k in pa
    )


def main() -> None:
    mode, ckpt, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    group = mx.distributed.init(strict=True, backend="ring")
    rank = group.rank()
    if mode == "probe":
        total = mx.distributed.all_sum(mx.array(rank + 1.0), group=group, stream=mx.cpu).item()
        (out / f"rank-{rank}.json").write_text(json.dumps({"sum": total}))
        return

    source, options = ckpt, {}
    if mode == "tensor-ranges":
        home = Path(os.environ["HF_HOME"]).with_name(f"hf-home-rank-{rank}")
        os.environ.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"))
        import mlxload.hub.range_fetch as range_fetch

        range_fetch.GAP, range_fetch.HEADER_GUESS = 4096, 1024  # kilobyte shards: see the test
        source, options = HUB_SPEC, {"fetch": "ranges"}

    from mlxload.distributed import load_model_sharded
    from mlxload.model import load_model

    groups = {"tensor_group": group} if mode.startswith("tensor") else {"pipeline_group": group}
    if mode.endswith("-refused"):
        try:
            load_model_sharded(source, dtype="float32", **groups, **options)
            error = {"error": None}
        except Exception as e:
            error = {"error": type(e).__name__, "message": str(e)}
        (out / f"rank-{rank}.json").write_text(json.dumps(error))
        return
    model, _, _ = load_model_sharded(source, dtype="float32", **groups, **options)
    report = model.load_report.to_dict()
    prompt = mx.array(PROMPT)[None]
    logits = model(prompt).astype(mx.float32)
    mx.eval(logits)

    # The reference: read everything, then let mlx-lm cut it (after our load, so the bytes
    # and RSS above are ours alone).
    ref, _, _ = load_model(ckpt, dtype="float32")
    if mode.startswith("tensor"):
        ref.shard(group)
    else:
        ref.model.pipeline(group)
    mx.eval(ref.parameters())
    ref_logits = ref(prompt).astype(mx.float32)
    report["same_parameters"] = _same(model, ref)
    report["same_logits"] = bool(mx.array_equal(logits, ref_logits).item())
    np.save(out / f"logits-{rank}.npy", np.array(logits))
    (out / f"rank-{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
