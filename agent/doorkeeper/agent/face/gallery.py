"""In-memory 1:N search over the site's templates.

Rows live in one preallocated matrix (capacity, 512), dense in [0, n):
removal moves the last row into the hole, so a search is one matrix-vector
product over a contiguous view, never a copy.

Above ``INT8_MIN_TEMPLATES`` rows the exhaustive pass runs on an int8 copy of
the matrix through onnxruntime's u8s8 integer GEMM (a quarter of the memory
traffic: about 4 ms instead of 18 ms for 100,000 templates on one core), and
the best ``RESCORE`` candidates are rescored in float32 arithmetic. A matrix
with room for that many rows holds float16 (what templates are on the wire, so
nothing the hub sent is lost; half the memory): reported scores are then the
cosines of the float16-stored unit vectors, within about 1e-4 of float32 ones.
Smaller galleries keep float32 rows, searched exhaustively with no copy.

Templates carry the model id that made them; templates of another model are
never compared (their embeddings are not comparable) and are counted per model
so the agent can log why they were skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from doorkeeper.wire.templates import MATCH_THRESHOLD

from .engine import EMBEDDING_DIM

# Chosen from ../shared/faces and published practice: see NOTES_FOR_LEAD.md. The hub refuses
# duplicate enrolments at the same bar.
DEFAULT_THRESHOLD = MATCH_THRESHOLD
DEFAULT_MARGIN = 0.05
INT8_MIN_TEMPLATES = 32_768
RESCORE = 64
_INT8_SCALE = 400.0  # unit vectors: |component| <= 127/400 = 0.32 before clipping


@dataclass(frozen=True)
class Match:
    """The outcome of one search.

    ``accepted`` iff score >= threshold and margin >= the gallery's margin, where
    margin = score - second_best_score and second_best_score is the best score of
    any *other* person (-1.0 when there is none). ``reason`` is a short code:
    accepted, below_threshold, ambiguous or empty_gallery. ``nearest`` is the person
    with the best score whether accepted or not (None for an empty gallery): a
    candidate, never an identification.
    """

    person_id: str | None
    score: float
    second_best_score: float
    margin: float
    accepted: bool
    reason: str
    nearest: str | None = None


class Gallery:
    """Templates of one model id, searchable by cosine similarity, one person per id."""

    def __init__(
        self,
        model_id: str,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        capacity: int = 1024,
    ) -> None:
        self.model_id = model_id
        self.threshold = threshold
        self.margin = margin
        capacity = max(1, capacity)
        self._vectors = np.zeros((capacity, EMBEDDING_DIM), dtype=_row_dtype(capacity))
        self._owner = np.zeros(capacity, dtype=np.int32)
        self._n = 0
        self._persons: list[str | None] = []
        self._person_index: dict[str, int] = {}
        self._rows: dict[int, list[int]] = {}
        self._free_persons: list[int] = []
        self.skipped: dict[str, int] = {}
        self._int8: _Int8Index | None = None

    @classmethod
    def build(
        cls,
        model_id: str,
        templates: Iterable[tuple[str, str, np.ndarray]],
        *,
        expected: int | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
    ) -> Gallery:
        """A gallery from (person_id, model_id, embedding) triples.

        ``expected`` (the whitelist's template count) preallocates the matrix once, so
        peak memory stays one matrix; without it (or when more come) the matrix grows.
        """
        gallery = cls(model_id, threshold=threshold, margin=margin, capacity=expected or 1024)
        for person_id, template_model, embedding in templates:
            gallery.add(person_id, template_model, embedding)
        return gallery

    def __len__(self) -> int:
        return self._n

    @property
    def person_count(self) -> int:
        return len(self._person_index)

    def skip_messages(self) -> list[str]:
        """One log line per foreign model id whose templates were skipped."""
        return [
            f"{count} templates made by model {other} are not comparable with {self.model_id} "
            "and were skipped: re-template those persons with this model"
            for other, count in sorted(self.skipped.items())
        ]

    def add(self, person_id: str, model_id: str, embedding: np.ndarray) -> bool:
        """Add one template. Returns False (and counts it) when its model id differs.

        Raises ValueError for an embedding that is not 512 finite values; the stored
        vector is L2-normalised.
        """
        if model_id != self.model_id:
            self.skipped[model_id] = self.skipped.get(model_id, 0) + 1
            return False
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector)) if vector.shape == (EMBEDDING_DIM,) else 0.0
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"template of {person_id!r} is not a {EMBEDDING_DIM}-d embedding")
        if self._n == self._vectors.shape[0]:
            self._grow(self._n + max(1024, self._n // 4))  # modest steps: the copy is transient
        pidx = self._person_index.get(person_id)
        if pidx is None:
            pidx = self._free_persons.pop() if self._free_persons else len(self._persons)
            if pidx == len(self._persons):
                self._persons.append(person_id)
            else:
                self._persons[pidx] = person_id
            self._person_index[person_id] = pidx
            self._rows[pidx] = []
        row = self._n
        self._vectors[row] = vector / norm
        self._owner[row] = pidx
        self._rows[pidx].append(row)
        self._n += 1
        if self._int8 is not None:
            self._int8.set_row(row, self._vectors[row])
        return True

    def remove_person(self, person_id: str) -> int:
        """Remove every template of a person at once; returns how many were removed."""
        pidx = self._person_index.pop(person_id, None)
        if pidx is None:
            return 0
        rows = sorted(self._rows.pop(pidx), reverse=True)
        for row in rows:
            last = self._n - 1
            if row != last:
                moved_owner = int(self._owner[last])
                self._vectors[row] = self._vectors[last]
                self._owner[row] = moved_owner
                owner_rows = self._rows[moved_owner]
                owner_rows[owner_rows.index(last)] = row
                if self._int8 is not None:
                    self._int8.copy_row(last, row)
            if self._int8 is not None:
                self._int8.clear_row(last)
            self._n = last
        self._persons[pidx] = None
        self._free_persons.append(pidx)
        return len(rows)

    @property
    def nbytes(self) -> int:
        """Bytes held by the template matrix and its int8 index (if built)."""
        extra = self._int8.codes.nbytes + self._int8.sums.nbytes if self._int8 is not None else 0
        return int(self._vectors.nbytes + self._owner.nbytes + extra)

    def _grow(self, capacity: int) -> None:
        vectors = np.zeros((capacity, EMBEDDING_DIM), dtype=_row_dtype(capacity))
        vectors[: self._n] = self._vectors[: self._n]
        owner = np.zeros(capacity, dtype=np.int32)
        owner[: self._n] = self._owner[: self._n]
        self._vectors, self._owner = vectors, owner
        self._int8 = None  # rebuilt at the next large search

    def search(self, embedding: np.ndarray) -> Match:
        """The best person for a probe embedding (unit norm, 512-d), max over their templates."""
        n = self._n
        if n == 0:
            return Match(None, -1.0, -1.0, 0.0, False, "empty_gallery")
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if n >= INT8_MIN_TEMPLATES:
            if self._int8 is None:
                self._int8 = _Int8Index(self._vectors, n)
            rows = self._int8.candidates(query, n, RESCORE)
            scores = self._vectors[rows].astype(np.float32) @ query
            owners = self._owner[rows]
            if np.all(owners == owners[0]):  # one person holds every candidate: go exhaustive
                scores = self._all_scores(query, n)
                owners = self._owner[:n]
        else:
            scores = self._all_scores(query, n)
            owners = self._owner[:n]
        best = int(np.argmax(scores))
        best_owner = owners[best]
        score = float(scores[best])
        others = scores[owners != best_owner]
        second = float(others.max()) if others.size else -1.0
        margin = score - second
        person = self._persons[int(best_owner)]
        if score < self.threshold:
            return Match(None, score, second, margin, False, "below_threshold", person)
        if margin < self.margin:
            return Match(None, score, second, margin, False, "ambiguous", person)
        return Match(person, score, second, margin, True, "accepted", person)


    def _all_scores(self, query: np.ndarray, n: int) -> np.ndarray:
        if self._vectors.dtype == np.float32:
            return self._vectors[:n] @ query
        # float16 rows: score in float32 blocks, never a float32 copy of the whole matrix
        return np.concatenate([self._vectors[start:min(n, start + 8192)].astype(np.float32) @ query
                               for start in range(0, n, 8192)])


def _row_dtype(capacity: int) -> type[np.floating[Any]]:
    """float16 rows for a matrix large enough for the int8 pre-filter, float32 below."""
    return np.float16 if capacity >= INT8_MIN_TEMPLATES else np.float32


class _Int8Index:
    """Transposed int8 copy (512, capacity) of the matrix, searched with ORT's u8s8 GEMM."""

    def __init__(self, vectors: np.ndarray, n: int) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        capacity = vectors.shape[0]
        self.codes = np.zeros((EMBEDDING_DIM, capacity), dtype=np.int8)
        self.sums = np.zeros(capacity, dtype=np.int32)
        for start in range(0, n, 8192):  # chunked: no float copy of the whole matrix
            stop = min(n, start + 8192)
            block = _quantise(vectors[start:stop].astype(np.float32))
            self.codes[:, start:stop] = block.T
            self.sums[start:stop] = block.sum(axis=1, dtype=np.int32)
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["q", "codes"], ["y"])],
            "gallery",
            [
                helper.make_tensor_value_info("q", TensorProto.UINT8, [1, EMBEDDING_DIM]),
                helper.make_tensor_value_info("codes", TensorProto.INT8, [EMBEDDING_DIM, "n"]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [1, "n"])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def set_row(self, row: int, vector: np.ndarray) -> None:
        code = _quantise(vector.astype(np.float32)[None, :])[0]
        self.codes[:, row] = code
        self.sums[row] = int(code.sum(dtype=np.int32))

    def copy_row(self, source: int, target: int) -> None:
        self.codes[:, target] = self.codes[:, source]
        self.sums[target] = self.sums[source]

    def clear_row(self, row: int) -> None:
        self.codes[:, row] = 0
        self.sums[row] = 0

    def candidates(self, query: np.ndarray, n: int, k: int) -> np.ndarray:
        # uint8 query = int8 code + 128; subtract 128 * column sum to undo the offset.
        code = _quantise(query[None, :])[0].astype(np.int16) + 128
        raw = self._session.run(None, {"q": code.astype(np.uint8)[None, :], "codes": self.codes})
        approx = raw[0][0, :n] - 128 * self.sums[:n]
        k = min(k, n)
        return np.argpartition(approx, n - k)[n - k :]


def _quantise(block: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(block * _INT8_SCALE), -127, 127).astype(np.int8)
