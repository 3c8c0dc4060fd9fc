"""Files an operator names are read with a cap that holds whatever the file is.

`stat()` says 0 bytes for /dev/zero and a FIFO, so a size check before reading bounds nothing:
`person add --photo /dev/zero` once grew to 23.6 GB. Each probe runs in its own process under
an address-space limit, so a read that does not stop ends in MemoryError (a failed test)
instead of taking the machine down; a bounded read ends in one line naming the file.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from doorkeeper.wire import templates as tmpl
from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS
from tests.harness import doorkeeper_cmd

ADDRESS_SPACE = 3 * 1024**3  # far above what a bounded read needs (caps are <= 40 MiB)


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def probe(code: str) -> subprocess.CompletedProcess[str]:
    return run_limited([sys.executable, "-c", code])


def test_photo_from_dev_zero_is_refused_in_one_line() -> None:
    done = probe(
        "from doorkeeper.agent.face.engine import ImageError, load_image\n"
        "try:\n    load_image('/dev/zero')\nexcept ImageError as exc:\n    print(exc)\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"/dev/zero: image is over the {LIMITS.max_image_file_bytes} byte limit"


def test_person_add_photo_dev_zero_fails_with_one_line(tmp_path: Path) -> None:  # the reported attack
    key = tmp_path / "operator.key"
    key.write_bytes(b"\x01" * 32)
    key.chmod(0o600)
    args = ["person", "add", "--site", "oak", "--name", "Ann", "--photo", "/dev/zero", "--consent", "Ann",
            "--hub", "127.0.0.1:1", "--operator-key", str(key)]
    done = run_limited(doorkeeper_cmd(*args))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "byte limit" in done.stderr and "Traceback" not in done.stderr
    assert "MemoryError" not in done.stderr


def test_template_from_dev_zero_and_a_huge_npy_header_are_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    with huge.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\x00" * 4096)
    done = probe(
        "import sys\nfrom doorkeeper.wire import templates as t\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        t.load_npy(p)\n    except t.TemplateError as exc:\n        print(exc)\n"
        .replace("sys.argv[1:]", repr(["/dev/zero", str(huge)])))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines == [f"/dev/zero: .npy template is over the {LIMITS.max_npy_bytes} byte limit",
                     f"{huge}: expected 512 floats, got shape (1000000000000,) float32"]


def test_a_good_npy_template_still_loads(tmp_path: Path) -> None:
    good = tmp_path / "t.npy"
    np.save(good, np.arange(512, dtype=np.float32))
    assert tmpl.load_npy(str(good)).shape == (512,)
    np.save(good, np.arange(511, dtype=np.float32))
    with pytest.raises(tmpl.TemplateError, match="expected 512 floats"):
        tmpl.load_npy(str(good))


def test_pairs_csv_and_token_file_from_dev_zero_are_refused(tmp_path: Path) -> None:
    done = probe(
        "from pathlib import Path\nimport click\n"
        "from doorkeeper.tools.cli.face import _read_pairs\n"
        "try:\n    _read_pairs(Path('/dev/zero'), Path('/tmp'))\n"
        "except click.ClickException as exc:\n    print(exc.message)\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"/dev/zero: pairs CSV is over the {LIMITS.max_csv_bytes} byte limit"
    done = run_limited(doorkeeper_cmd("agent", "init", "--data", str(tmp_path / "a"), "--hub", "127.0.0.1:1",
                                      "--token-file", "/dev/zero"))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "token file is over the 4096 byte limit" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "a" / "identity.json").exists()


def test_read_capped_bounds_a_fifo_fed_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write_forever() -> None:
        try:
            with open(fifo, "wb") as f:
                while True:
                    f.write(b"y" * 65536)
        except (BrokenPipeError, OSError):
            return  # the reader closed: it stopped at the cap

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    with pytest.raises(TooLarge, match="over the 100000 byte limit"):
        read_capped(fifo, 100_000)
    writer.join(30)
    assert not writer.is_alive()
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert read_capped(small, 3) == b"abc"
    with pytest.raises(TooLarge):
        read_capped(small, 2)
