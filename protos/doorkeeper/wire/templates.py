"""Face templates on the wire: 512-d embeddings tagged with their model.

On the wire a template is little-endian float16 (1 KiB for 512 dims instead of
2 KiB): `doorkeeper bench sync` measures that this changes cosine similarity of
L2-normalised embeddings by far less than 1e-3. Inside a process templates are
float32 and L2-normalised.
"""

from __future__ import annotations

import io
import math

import numpy as np

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS


class TemplateError(ValueError):
    """A template is malformed: wrong size, encoding, or not finite."""


# Cosine similarity at or above which two templates are taken for the same person: the
# doors' default match threshold, and the hub's bar for refusing a duplicate enrolment.
MATCH_THRESHOLD = 0.40


def normalise(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise TemplateError("template has zero or non-finite norm")
    return v / norm


def encode(vector: np.ndarray, model_id: str) -> pb.Template:
    """L2-normalise `vector` and pack it as float16 for the wire."""
    v = normalise(vector)
    if v.shape[0] != LIMITS.template_dim:
        raise TemplateError(f"template has {v.shape[0]} dims, expected {LIMITS.template_dim}")
    if not model_id or len(model_id) > 200:
        raise TemplateError("template needs a model id (file name:sha256)")
    return pb.Template(
        model_id=model_id,
        dim=v.shape[0],
        vector=v.astype("<f2").tobytes(),
        encoding=pb.Template.ENCODING_F16,
    )


def decode(template: pb.Template) -> np.ndarray:
    """Unpack a wire template into a normalised float32 vector; refuses malformed ones."""
    if template.dim != LIMITS.template_dim:
        raise TemplateError(f"template has {template.dim} dims, expected {LIMITS.template_dim}")
    if template.encoding == pb.Template.ENCODING_F16:
        dtype, width = "<f2", 2
    elif template.encoding == pb.Template.ENCODING_F32:
        dtype, width = "<f4", 4
    else:
        raise TemplateError(f"unknown template encoding {template.encoding}")
    if len(template.vector) != template.dim * width:
        raise TemplateError(
            f"template vector is {len(template.vector)} bytes, expected {template.dim * width}"
        )
    v = np.frombuffer(template.vector, dtype=dtype).astype(np.float32)
    if not np.all(np.isfinite(v)):
        raise TemplateError("template holds non-finite values")
    return normalise(v)


def load_npy(path: str) -> np.ndarray:
    """Read a template from a .npy file without allowing pickled objects.

    Refused (TemplateError, one line): a file over LIMITS.max_npy_bytes (at most that many
    bytes are read, whatever the file is), and a header that claims anything but
    LIMITS.template_dim floats, checked before any array is allocated."""
    try:
        data = read_capped(path, LIMITS.max_npy_bytes, ".npy template")
    except TooLarge as exc:
        raise TemplateError(str(exc)) from None
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read ({exc.strerror or exc})") from None
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(stream)
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"{path}: not a readable .npy array ({exc})") from None
    if dtype.kind != "f" or math.prod(shape) != LIMITS.template_dim:
        raise TemplateError(f"{path}: expected {LIMITS.template_dim} floats, got shape {shape} {dtype}")
    try:
        v = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{path}: not a readable .npy array ({exc})") from None
    return normalise(v)
