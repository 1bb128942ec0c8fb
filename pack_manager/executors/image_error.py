"""The one error of image handling (podman_images), apart from it: code that only catches it
need not load podman-py."""

from __future__ import annotations


class ImageError(Exception):
    """An image could not be had or handled; the message is the reason users see."""
