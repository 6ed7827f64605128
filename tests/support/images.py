"""The two images, built by hack/images.sh from the real Dockerfiles, and their processes run as
a kubelet runs a container: `buildah run` (chroot isolation, the host's network) as the pod's
user, with every capability dropped, a read-only root filesystem and only the mounts given.

buildah has no read-only root: the process runs in a private mount namespace (`unshare`) in
which the container's root is bound read-only onto itself, then the mounts are bound on top,
so nothing of it outlives the process. `/run` is a small writable tmpfs there, because buildah's
chroot isolation writes `/run/.containerenv` (a kubelet's container would have it read-only).
"""

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MOUNT = """set -e
root=$1; shift
mount --bind "$root" "$root"; mount -o remount,bind,ro "$root"
mount -t tmpfs -o size=1m,mode=755 tmpfs "$root/run"
while [ "$1" != -- ]; do
  case $2 in /run/*) mkdir -p "$root$2" ;; esac
  mount --bind "$1" "$root$2"; [ "$3" = rw ] || mount -o remount,bind,ro "$root$2"; shift 3
done
shift
exec "$@"
"""


@dataclass
class Mount:
    source: Path
    target: str
    writable: bool = False


class Images:
    """hack/images.sh's output: buildah's storage and the two image names."""

    def __init__(self, names: dict[str, str]) -> None:
        self.storage = ["--root", names["VIDEOGEN_BUILDAH_ROOT"], "--runroot", names["VIDEOGEN_BUILDAH_RUNROOT"],
                        "--storage-driver", names["VIDEOGEN_BUILDAH_DRIVER"]]
        self.operator, self.runner = names["VIDEOGEN_OPERATOR_IMAGE"], names["VIDEOGEN_RUNNER_IMAGE"]

    def buildah(self, *args: str) -> str:
        result = subprocess.run(["buildah", *self.storage, *args], capture_output=True, text=True, timeout=300)
        if result.returncode:
            raise AssertionError(f"buildah {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()

    def config(self, image: str) -> dict:
        """The image's OCI config (User, Env, Entrypoint, …)."""
        return json.loads(self.buildah("inspect", "--type", "image", image))["OCIv1"]["config"]


class Container:
    """A working container of an image, whose root filesystem stays read-only to what it runs."""

    def __init__(self, images: Images, image: str) -> None:
        self.images = images
        self.name = f"videogen-test-{uuid.uuid4().hex[:8]}"
        images.buildah("from", "--name", self.name, image)
        self.rootfs = Path(images.buildah("mount", self.name))

    def command(self, argv: list[str], *, user: str, env: dict[str, str], mounts: list[Mount]) -> list[str]:
        """The command line that runs `argv` in the container as the pod's container would run."""
        binds = []
        for mount in mounts:
            binds += [str(mount.source), mount.target, "rw" if mount.writable else "ro"]
            if mount.target.startswith("/run/"):
                continue  # made in the tmpfs
            point = self.rootfs / mount.target.lstrip("/")
            if not point.resolve().is_relative_to(self.rootfs):  # an absolute link would lead out of the image
                raise ValueError(f"{mount.target} leads out of the container's root (a symbolic link)")
            point.mkdir(parents=True, exist_ok=True)  # the mount point, as a runtime makes it
        run = ["buildah", *self.images.storage, "run", "--isolation", "chroot", "--network", "host",
               "--user", user, "--cap-drop", "ALL", *[f"--env={k}={v}" for k, v in env.items()], self.name, "--"]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT, "sh", str(self.rootfs),
                *binds, "--", *run, *argv]

    def remove(self) -> None:
        self.images.buildah("rm", self.name)


@pytest.fixture(scope="session")
def images() -> Images:
    result = subprocess.run(["bash", str(ROOT / "hack" / "images.sh"), "names"], capture_output=True, text=True,
                            timeout=120, env=os.environ)
    if result.returncode:
        pytest.fail(f"the images are not built: run hack/images.sh build (hack/test.sh does)\n{result.stderr}")
    return Images(dict(line.split("=", 1) for line in result.stdout.split()))
