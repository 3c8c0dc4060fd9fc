"""Caps on untrusted sizes, in one place (as python-tuf keeps its config).

Everything that arrives from a network, a file or an operator is checked
against these before anything is allocated or parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_chunk_bytes: int = 3 * MiB  # under gRPC's 4 MiB default message size
    target_chunk_bytes: int = 1 * MiB  # plaintext per chunk the hub aims for
    max_chunks: int = 4096
    max_payload_bytes: int = 2048 * MiB
    max_persons: int = 1_000_000
    max_record_bytes: int = 64 * 1024
    max_templates_per_person: int = 16
    template_dim: int = 512
    max_id_chars: int = 64
    max_name_chars: int = 200
    max_doors_per_person: int = 256
    max_credentials_per_person: int = 16
    max_card_chars: int = 64
    max_pin_chars: int = 12
    max_schedules_per_person: int = 32
    max_log_batch_bytes: int = 3 * MiB
    max_log_records_per_batch: int = 5000
    grpc_max_message_bytes: int = 4 * MiB


LIMITS = Limits()
