"""A local datastore that refuses, when they are saved, an image the model cannot use and a label training would
refuse.

Why: MONAI Label's ``LocalDatastore`` stores any uploaded file; a text file or a 2D slice would then fail every later
inference, scoring run and training, and a final label with stray values (an uncertainty overlay submitted with the
anatomy, say) would stop the next training run. Checking on arrival answers the user at once with the bundle's
message and keeps the datastore clean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.http_errors import HANDLED, http_error

__all__ = ["CheckedLocalDatastore"]


class CheckedLocalDatastore(LocalDatastore):
    """``LocalDatastore`` that runs the bundle's checks (raising its ``InputError``) on what it is given.

    Args:
        check_image: ``check_image(path)`` reads a file as inference does and applies the input checks.
        check_label: ``check_label(image_path, label_path)`` applies training's checks to a label saved as final.
        args, kwargs: as for ``LocalDatastore``.
    """

    def __init__(
        self, *args: Any, check_image: Callable[[str], None], check_label: Callable[[str, str], None], **kwargs: Any
    ) -> None:
        self.check_image = check_image
        self.check_label = check_label
        super().__init__(*args, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            self.check_image(image_filename)
        except HANDLED as e:
            raise http_error(e) from e
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image = self.get_image_uri(image_id)
        if not image:
            raise HTTPException(404, f"image {image_id!r} is not in the datastore: save its label after uploading it.")
        if label_tag == DefaultLabelTag.FINAL:
            try:
                self.check_label(image, label_filename)
            except HANDLED as e:
                raise http_error(e) from e
        return super().save_label(image_id, label_filename, label_tag, label_info)
