"""A passage index: passage embeddings searched by inner product with faiss.

    index = PassageIndex.build(embeddings, ids)          # exact ("flat")
    index = PassageIndex.build(embeddings, ids, kind="ivfpq", nlist=256, pq_m=16)
    scores, ids = index.search(query_embeddings, k=20)
    index.add(new_embeddings, new_ids)                    # after training too
    index.save(directory); PassageIndex.load(directory)

Kinds (faiss's own indexes, inner-product metric):

* ``flat``: IndexFlatIP, exact maximum inner product search; for the small
  corpora here (up to a few hundred thousand passages on a CPU).
* ``ivfpq``: faiss.index_factory "IVF{nlist},PQ{pq_m}x{pq_bits}": k-means
  into `nlist` lists, vectors product-quantized to pq_m codes; a search
  scans `nprobe` lists. Trained on the embeddings given to `build` (faiss
  wants at least ~39 x nlist of them). Approximate: scores are the
  quantized vectors' inner products.

Passage ids are strings kept beside the index (faiss numbers vectors
0..n-1 in the order added). `search` returns at most `len(index)` columns.
Embeddings must be float32-convertible [n, dim] arrays of finite numbers;
a wrong dimension, NaN or duplicate id is a T5mtlError naming it.

`save` writes a directory (index.faiss: faiss.serialize_index's bytes;
ids.json; index.json, written last, with the kind, dimension, count and
nprobe), whole or not at all (t5mtl.convert.atomic_dir), to a local path or
gs://; `load` refuses a directory without index.json or whose counts
disagree.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError

KINDS = ("flat", "ivfpq")
FORMAT_VERSION = 1


def _import_faiss():
    try:
        import faiss
    except ImportError as e:                               # pragma: no cover
        raise T5mtlError("the passage index needs faiss: pip install faiss-cpu") from e
    return faiss


def _as_embeddings(x, dim: int | None, what: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise T5mtlError(f"{what} must be a non-empty [n, dim] array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise T5mtlError(f"{what} have dimension {x.shape[1]}, the index {dim}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise T5mtlError(f"{what} row {int(bad[0])} holds NaN or Inf")
    return x


class PassageIndex:
    """Passage embeddings and their string ids in a faiss index (module docstring)."""

    def __init__(self, faiss_index, ids: Sequence[str], kind: str, nprobe: int = 1):
        if faiss_index.ntotal != len(ids):
            raise T5mtlError(f"the faiss index holds {faiss_index.ntotal} vectors but "
                             f"{len(ids)} ids were given")
        self._index = faiss_index
        self._ids = list(ids)
        self._positions = {pid: i for i, pid in enumerate(self._ids)}
        if len(self._positions) != len(self._ids):
            raise T5mtlError("passage ids must be unique")
        self.kind = kind
        self.nprobe = int(nprobe)

    # -- building -----------------------------------------------------------

    @classmethod
    def build(cls, embeddings, ids: Sequence[str], kind: str = "flat", nlist: int = 64,
              pq_m: int = 8, pq_bits: int = 8, nprobe: int = 8) -> "PassageIndex":
        """An index of `embeddings` [n, dim] with `ids` (n strings)."""
        faiss = _import_faiss()
        x = _as_embeddings(embeddings, None, "passage embeddings")
        dim = x.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivfpq":
            if dim % pq_m:
                raise T5mtlError(f"ivfpq: pq_m={pq_m} must divide the dimension {dim}")
            if len(x) < nlist:
                raise T5mtlError(f"ivfpq: {len(x)} embeddings cannot train nlist={nlist} lists")
            index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_m}x{pq_bits}",
                                        faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        else:
            raise T5mtlError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        out = cls(index, [], kind, nprobe)
        out.add(x, ids)
        return out

    def add(self, embeddings, ids: Sequence[str]) -> None:
        """Appends passages (their embeddings and ids); ids must be new."""
        x = _as_embeddings(embeddings, self.dim, "passage embeddings")
        ids = [str(i) for i in ids]
        if len(ids) != len(x):
            raise T5mtlError(f"{len(x)} embeddings but {len(ids)} ids")
        seen = set(self._positions)
        for pid in ids:
            if pid in seen:
                raise T5mtlError(f"passage id {pid!r} is already in the index")
            seen.add(pid)
        self._index.add(x)
        for pid in ids:
            self._positions[pid] = len(self._ids)
            self._ids.append(pid)

    # -- searching ----------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def search(self, queries, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """(scores float32 [q, k'], ids [q][k']) of each query's k' = min(k,
        len) best passages by inner product, best first."""
        if k < 1:
            raise T5mtlError(f"k must be at least 1, got {k}")
        x = _as_embeddings(queries, self.dim, "query embeddings")
        k = min(k, len(self))
        if self.kind == "ivfpq":
            self._index.nprobe = self.nprobe
        scores, rows = self._index.search(x, k)
        ids = [[self._ids[r] if r >= 0 else "" for r in row] for row in rows]
        return scores, ids

    def embeddings(self) -> np.ndarray:
        """[n, dim] float32: the stored vectors (ivfpq: as decoded)."""
        return self._index.reconstruct_n(0, len(self))

    # -- saving -------------------------------------------------------------

    def save(self, directory: str) -> None:
        """Writes the index to `directory`, whole or not at all."""
        from t5mtl.convert.atomic_dir import atomic_directory
        faiss = _import_faiss()
        data = faiss.serialize_index(self._index).tobytes()
        with atomic_directory(directory) as tmp:
            paths.write_bytes(paths.join(tmp, "index.faiss"), data)
            paths.write_text(paths.join(tmp, "ids.json"), json.dumps(self._ids))
            paths.write_text(paths.join(tmp, "index.json"), json.dumps({
                "format": FORMAT_VERSION, "kind": self.kind, "dim": self.dim,
                "count": len(self), "nprobe": self.nprobe}, indent=1))

    @classmethod
    def load(cls, directory: str) -> "PassageIndex":
        faiss = _import_faiss()
        meta_path = paths.join(directory, "index.json")
        if not paths.isfile(meta_path):
            raise T5mtlError(f"{directory}: no index.json; not a saved passage index "
                             f"(or an incomplete save)")
        meta = json.loads(paths.read_text(meta_path))
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") not in KINDS:
            raise T5mtlError(f"{meta_path}: unknown format {meta.get('format')!r} or kind "
                             f"{meta.get('kind')!r}")
        with paths.open_file(paths.join(directory, "index.faiss"), "rb") as f:
            index = faiss.deserialize_index(np.frombuffer(f.read(), dtype=np.uint8))
        ids = json.loads(paths.read_text(paths.join(directory, "ids.json")))
        if index.ntotal != meta["count"] or len(ids) != meta["count"] or index.d != meta["dim"]:
            raise T5mtlError(f"{directory}: index.json says {meta['count']} x {meta['dim']}, "
                             f"the files hold {index.ntotal} x {index.d} and {len(ids)} ids")
        return cls(index, ids, meta["kind"], meta.get("nprobe", 1))
