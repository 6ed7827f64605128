"""Both images carry in their layers only what their root filesystems show: no file that a later
layer removes or replaces (the offline build's wheel folder, the lock, the sources stay in the
Dockerfiles' build stages), so what a node pulls and stores is what the container has."""

import json
import os
from pathlib import Path

import pytest

from tests.support.images import Container

# A layer is a tar: each entry costs a 512-byte header (two, for a long name) and the padding of
# its content to 512 bytes, so at most about 1 KiB besides its content.
ENTRY_BYTES = 1024
SLACK = 4 * 2**20  # what the Dockerfiles' own steps rewrite (/etc/passwd, /etc/group, …)


def shown(root: Path) -> tuple[int, int, list[str]]:
    """Bytes of the files as the container sees them, how many entries (files, folders, links)
    hold them, and the wheels among them but those of the base's Python (ensurepip's pip and
    setuptools, in Debian's /usr/share/python-wheels)."""
    size, entries, wheels = 0, 0, []
    for folder, folders, files in os.walk(root):
        entries += len(folders) + len(files)
        for name in files:
            size += os.lstat(os.path.join(folder, name)).st_size
            if name.endswith(".whl") and not ({"python-wheels", "ensurepip"} & set(Path(folder).parts)):
                wheels.append(os.path.join(folder, name)[len(str(root)):])
    return size, entries, wheels


@pytest.mark.parametrize("which", ["operator", "runner"])
def test_the_layers_hold_only_what_the_image_shows(images, which):
    image = getattr(images, which)
    manifest = json.loads(json.loads(images.buildah("inspect", "--type", "image", image))["Manifest"])
    layers = sum(layer["size"] for layer in manifest["layers"])  # uncompressed tars, as stored
    container = Container(images, image)
    try:
        size, entries, wheels = shown(container.rootfs)
    finally:
        container.remove()
    assert wheels == []
    assert layers <= size + entries * ENTRY_BYTES + SLACK, \
        f"{which}: {layers / 2**20:.0f} MiB of layers for {size / 2**20:.0f} MiB in {entries} files and folders"
