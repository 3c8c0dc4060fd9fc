"""Card numbers and PINs: validated as hostile input, then kept only as keyed hashes.

Both the hub (at enrolment) and the door (when a card is presented) hash with
the site's credential salt, which reaches doors only inside signed, encrypted
bundles. Neither database holds a card number or PIN in clear.
"""

from __future__ import annotations

import hashlib
import re

from doorkeeper.wire.limits import LIMITS

_CARD = re.compile(rf"[0-9A-Za-z]{{4,{LIMITS.max_card_chars}}}")
_PIN = re.compile(rf"[0-9]{{4,{LIMITS.max_pin_chars}}}")


class CredentialError(ValueError):
    """A card number or PIN is malformed; the message never echoes the value."""


def normalise_card(card: str) -> str:
    """Card numbers: 4-64 ASCII letters/digits, case-insensitive. Refuses anything else."""
    if not isinstance(card, str) or len(card) > LIMITS.max_card_chars or not _CARD.fullmatch(card):
        raise CredentialError(
            f"card number must be 4-{LIMITS.max_card_chars} ASCII letters or digits"
        )
    return card.upper()


def check_pin(pin: str) -> str:
    if not isinstance(pin, str) or len(pin) > LIMITS.max_pin_chars or not _PIN.fullmatch(pin):
        raise CredentialError(f"PIN must be 4-{LIMITS.max_pin_chars} digits")
    return pin


def card_hash(salt: bytes, card: str) -> bytes:
    raw = normalise_card(card).encode()
    return hashlib.blake2b(raw, key=salt, person=b"dk-card", digest_size=32).digest()


def pin_hash(salt: bytes, pin: str) -> bytes:
    return hashlib.blake2b(check_pin(pin).encode(), key=salt, person=b"dk-pin", digest_size=32).digest()
