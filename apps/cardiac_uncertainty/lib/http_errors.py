"""How the method's own errors reach a client: an HTTP status and the bundle's message, which names the fix.

Why: MONAI Label answers any other exception with a bare "500 Internal Server Error". A user who sends a 4D cine or
a PDF, or an operator whose checkpoint bank is damaged, must read what is wrong and what to do instead.
"""

from __future__ import annotations

from fastapi import HTTPException

from lib.image_loading import UnreadableImageError
from scripts.input_checks import InputError
from scripts.posterior_bank import BankError

__all__ = ["HANDLED", "http_error"]

HANDLED = (InputError, BankError)


def http_error(error: InputError | BankError) -> HTTPException:
    """415 for a file that is not an image, 422 for an image the model cannot use (2D, 4D, non-finite...),
    503 naming the checkpoint bank for a bank that cannot serve (missing, corrupted, wrong network)."""
    if isinstance(error, UnreadableImageError):
        return HTTPException(status_code=415, detail=str(error))
    if isinstance(error, InputError):
        return HTTPException(status_code=422, detail=str(error))
    return HTTPException(status_code=503, detail=f"the checkpoint bank cannot serve: {error}")
