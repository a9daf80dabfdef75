"""Domain pairs for unsupervised domain adaptation: a labelled source and an unlabelled target.

    data: {name: domain_pair, preset: toy2d_shift, angle: 30, shift: [0.5, 0.0]}
    data: {name: domain_pair, source: {name: mnist1d}, target: {name: mnist1d, noise_scale: 0.6}}

The bundle's `train` and `val` are the source's (labelled); `test` is the target's test split (its
labels serve evaluation only); `target_train` is the target's training split with every label
replaced by -1, so a loss that read one would fail (cross-entropy refuses class -1). The target's
validation split is not used. Each side is any data spec, loaded by its own registry entry with
its own seeded split; a preset fills both (fields given beside it are merged over its own):

- `toy2d_shift`: toy2d, and the same generator's points (other seed) rotated by `angle` degrees
  about their mean and then shifted by `shift` (DANN's toy, Ganin et al. 2016, rotates moons by 35).
- `mnist1d_shift`: mnist1d, and mnist1d generated with another seed, more correlated noise (0.4
  against 0.25) and more rescaling (0.6 against 0.4); `target` overrides any of noise_scale,
  scale_coeff, shift_scale.
- `mnist_usps`, `svhn_mnist`: torchvision sets under `root` (USPS is resized to 28x28; MNIST to
  32x32 with its gray channel repeated: the target always takes the source's image shape).
- `office31` (amazon, dslr, webcam) and `image_clef` (b, c, i, p): `image_folder` sets at
  `root/<domain>/images/<class>/` (Office-31's `domain_adaptation_images.tar.gz` unpacks so) and
  `root/by_class/<domain>/<class>/`, which is linked from ImageCLEF-DA's own layout (`root/<domain>/`
  images, `root/list/<domain>List.txt` labels) on first use. The whole target domain is its
  unlabelled training set and its test set (the usual transductive protocol, as in KD_UDA's
  `DA/DA_datasets.py`). `download: true` with `archive_url` fetches and unpacks the archive into
  `root` when a domain folder is missing.
"""

from __future__ import annotations

import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from kdlib.data.base import DATASETS, DataBundle, LoaderSplit, Split, TensorSplit
from kdlib.paths import temporary_beside
from kdlib.spec import Named, Spec, user_path

OFFICE31_DOMAINS = ("amazon", "dslr", "webcam")
IMAGE_CLEF_DOMAINS = ("b", "c", "i", "p")


def _image_pair(p: dict, layout: str) -> dict:
    folder = {d: layout.format(root=p["root"], domain=d) for d in (p["source_domain"], p["target_domain"])}
    common = {"name": "image_folder", "image_size": p.get("image_size", 224)}
    target_root = folder[p["target_domain"]]
    return {
        "source": {**common, "root": folder[p["source_domain"]], "test_fraction": 0.0},
        # transductive: the target's images are both its unlabelled training set and its test set
        "target": {**common, "root": target_root, "test_root": target_root, "val_fraction": 0.0, "test_fraction": 0.0},
    }


def _torchvision_pair(source: str, target: str):
    def fill(p: dict) -> dict:
        where = {"root": p.get("root", "data"), "download": p.get("download", False)}
        return {"source": {"name": source, **where}, "target": {"name": target, "val_fraction": 0.0, **where}}

    return fill


# preset -> (defaults of this section, function of the merged section -> default source and target)
PRESETS: dict[str, tuple[dict, Any]] = {
    "toy2d_shift": (
        {"angle": 35.0, "shift": (0.0, 0.0)},
        lambda p: {
            "source": {"name": "toy2d", "shape": "moons", "n_samples": 2000, "noise": 0.1},
            # same generator, other points: toy2d seeds its generator with split_seed
            "target": {
                "name": "toy2d",
                "shape": "moons",
                "n_samples": 2000,
                "noise": 0.1,
                "split_seed": 1,
                "val_fraction": 0.0,
            },
        },
    ),
    "mnist1d_shift": (
        {},
        lambda p: {
            "source": {"name": "mnist1d", "n_samples": 4000},
            "target": {
                "name": "mnist1d",
                "n_samples": 4000,
                "generator_seed": 7,
                "noise_scale": 0.4,
                "scale_coeff": 0.6,
                "shift_scale": 1.0,
                "val_fraction": 0.0,
            },
        },
    ),
    "mnist_usps": ({}, _torchvision_pair("mnist", "usps")),
    "svhn_mnist": ({}, _torchvision_pair("svhn", "mnist")),
    "office31": (
        {"root": "data/office31", "source_domain": "amazon", "target_domain": "webcam"},
        lambda p: _image_pair(p, "{root}/{domain}/images"),
    ),
    "image_clef": (
        {"root": "data/image_clef", "source_domain": "i", "target_domain": "p"},
        lambda p: _image_pair(p, "{root}/by_class/{domain}"),
    ),
}


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, Spec):
        return value.model_dump()
    return dict(value) if isinstance(value, dict) else value


def _merge(preset: dict, given: Any) -> Any:
    """The user's fields over the preset's; a side naming another dataset replaces the preset's."""
    given = _as_dict(given)
    if not isinstance(given, dict) or given.get("name", preset["name"]) != preset["name"]:
        return given
    return {**preset, **given}


class Params(Spec):
    has_target_domain: ClassVar[bool] = True  # what a domain-adaptation method needs (kdlib.validation)

    name: Literal["domain_pair"] = "domain_pair"
    preset: Literal["toy2d_shift", "mnist1d_shift", "mnist_usps", "svhn_mnist", "office31", "image_clef"] | None = (
        Field(None, description="a ready pair that fills source and target (fields given here are merged over it)")
    )
    source: Named("data", DATASETS) = Field(description="the labelled domain: any data spec (train and val come from it)")
    target: Named("data", DATASETS) = Field(
        description="the unlabelled domain: any data spec with the source's classes (its train split, labels "
        "masked, is the target_train split; its test split is the test split)"
    )
    angle: float = Field(
        0.0, description="rotate the target's 2-D points by this many degrees about the mean of its training points"
    )
    shift: tuple[float, float] = Field((0.0, 0.0), description="then add this to the target's 2-D points")
    root: str = Field("data", description="mnist_usps, svhn_mnist, office31, image_clef: folder of the files")
    download: bool = Field(
        False, description="fetch missing files (torchvision sets; office31/image_clef: from archive_url)"
    )
    archive_url: str | None = Field(
        None,
        description="office31, image_clef: URL (http(s):// or file://) of an archive that unpacks into root "
        "as <domain>/images/<class>/ (Office-31) or <domain>/ and list/<domain>List.txt (ImageCLEF-DA)",
    )
    source_domain: str | None = Field(None, description="office31: amazon, dslr or webcam; image_clef: b, c, i or p")
    target_domain: str | None = Field(None, description="office31: amazon, dslr or webcam; image_clef: b, c, i or p")
    image_size: int = Field(224, ge=8, description="office31, image_clef: side of the square images")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str) or data["preset"] not in PRESETS:
            return data  # no preset, or a value that validation refuses
        defaults, sides = PRESETS[data["preset"]]
        data = {**defaults, **{k: v for k, v in data.items() if v is not None or k not in defaults}}
        try:
            filled = sides(data)
        except (TypeError, AttributeError, KeyError):  # a field of the wrong type (a list for root): its check names it
            return data
        return {
            **data,
            "source": _merge(filled["source"], data.get("source")),
            "target": _merge(filled["target"], data.get("target")),
        }

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        for side in ("source", "target"):
            if getattr(self, side).name == "domain_pair":
                raise ValueError(f"{side}: a domain pair cannot be one side of another")
        domains = {"office31": OFFICE31_DOMAINS, "image_clef": IMAGE_CLEF_DOMAINS}.get(self.preset or "")
        for side in ("source_domain", "target_domain"):
            if domains and getattr(self, side) not in domains:
                raise ValueError(f"{side}: {self.preset} has domains {', '.join(domains)}, not {getattr(self, side)!r}")
        return self


    def sample_shape(self) -> tuple[int, ...] | None:
        """The source's: the target's samples are brought to its shape."""
        return getattr(self.source, "sample_shape", lambda: None)()

    def class_count(self) -> int | None:
        return getattr(self.source, "class_count", lambda: None)()

    def path_problems(self, where: str) -> list[str]:
        """Files missing from either side; Office-31 and ImageCLEF-DA: the domain folders (or their archive)."""
        if self.preset in ("office31", "image_clef"):
            missing = _missing_domains(self)
            if not missing or (self.download and self.archive_url):
                return []
            return [f"{where}.root: no folder {', '.join(missing)} (from {Path.cwd()}); set {where}.download: true "
                    f"and {where}.archive_url to fetch the {self.preset} archive, or point {where}.root at the "
                    "unpacked dataset"]
        return [line for side in ("source", "target")
                for line in getattr(getattr(self, side), "path_problems", lambda w: [])(f"{where}.{side}")]


def _missing_domains(p: Params) -> list[str]:
    """The domain folders of an Office-31 or ImageCLEF-DA pair that are not there (ImageCLEF's are made from its
    lists on first use, so its images folder and list count)."""
    root = user_path(p.root)
    missing = []
    for side, domain in ((p.source, p.source_domain), (p.target, p.target_domain)):
        folder = user_path(side.root)
        ready = folder.is_dir() or (
            p.preset == "image_clef" and (root / domain).is_dir() and (root / "list" / f"{domain}List.txt").is_file()
        )
        if not ready:
            missing.append(str(folder))
    return missing


def masked(split: Split) -> Split:
    """The same samples with every label -1: what a domain-adaptation method may see of the target."""
    if isinstance(split, TensorSplit):
        return TensorSplit(split.x, torch.full_like(split.y, -1))
    return LoaderSplit(
        _Unlabelled(split.dataset), torch.full_like(split.targets, -1), split.num_workers, split.pin_memory
    )


class _Unlabelled(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        return self.dataset[i][0], -1


def rotate_shift(x: Tensor, angle: float, shift: tuple[float, float], center: Tensor | None = None) -> Tensor:
    """2-D points rotated counter-clockwise by `angle` degrees about `center` (default the origin), then shifted."""
    a = math.radians(angle)
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=x.dtype)
    center = torch.zeros(2, dtype=x.dtype) if center is None else center.to(x.dtype)
    return (x - center) @ rotation.T + center + torch.tensor(shift, dtype=x.dtype)


def conform_images(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Images [N, C, H, W] resized (bilinear) to `shape`'s H, W; one channel repeated to three, or three averaged."""
    channels, size = shape[0], tuple(shape[1:])
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] == 1 else x.mean(1, keepdim=True)
    return x


class _Conformed(Dataset):
    def __init__(self, dataset: Dataset, shape: tuple[int, ...]) -> None:
        self.dataset, self.shape = dataset, shape

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return conform_images(x[None], self.shape)[0], y


def _map_split(split: Split, fn, shape: tuple[int, ...]) -> Split:
    if isinstance(split, TensorSplit):
        return TensorSplit(fn(split.x), split.y)
    return LoaderSplit(_Conformed(split.dataset, shape), split.targets, split.num_workers, split.pin_memory)


def _target_to_source(p: Params, target: DataBundle, shape: tuple[int, ...]) -> DataBundle:
    """The target's splits with the rotation/shift applied and images brought to the source's shape."""
    if p.angle or any(p.shift):
        if target.input_shape != (2,):
            raise ValueError(
                f"data.angle/data.shift move 2-D points; the target has samples of shape {list(target.input_shape)}"
            )
        center = target.train.x.mean(0)  # one center for every split: the target's training points' mean
        fn = lambda x: rotate_shift(x, p.angle, p.shift, center)  # noqa: E731
        target = DataBundle(
            *(_map_split(s, fn, shape) for s in (target.train, target.val, target.test)),
            target.num_classes,
            target.input_shape,
            target.class_names,
        )
    if target.input_shape == shape:
        return target
    if len(shape) != 3 or len(target.input_shape) != 3 or target.input_shape[0] not in (1, 3) or shape[0] not in (1, 3):
        raise ValueError(
            f"data.target has samples of shape {list(target.input_shape)} but data.source has {list(shape)}; "
            "only images (1 or 3 channels) are resized to match"
        )
    fn = lambda x: conform_images(x, shape)  # noqa: E731
    return DataBundle(
        *(_map_split(s, fn, shape) for s in (target.train, target.val, target.test)),
        target.num_classes,
        shape,
        target.class_names,
    )


def fetch_archive(url: str, root: Path) -> None:
    """Download `url` (http(s):// or file://) and unpack it into `root`; the archive is deleted after."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / (Path(urllib.parse.urlparse(url).path).name or "archive")
    part = archive.with_name(archive.name + ".part")
    try:
        with urllib.request.urlopen(url) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"data.archive_url={url!r}: could not fetch it ({e}); download the archive by hand and unpack it "
            f"into data.root={str(root)!r}"
        ) from e
    part.replace(archive)
    try:
        # tar: the "data" filter refuses paths outside root and special files; shutil's zip unpacker
        # skips such paths itself and takes no filter
        safe = {} if zipfile.is_zipfile(archive) else {"filter": "data"}
        shutil.unpack_archive(archive, root, **safe)
    except (shutil.ReadError, ValueError) as e:
        raise ValueError(f"data.archive_url={url!r}: {archive.name} is not a zip or tar archive ({e})") from e
    finally:
        archive.unlink(missing_ok=True)


def arrange_image_clef(root: Path, domain: str) -> Path:
    """ImageCLEF-DA keeps a domain's images in `root/<domain>/` and their labels in `root/list/<domain>List.txt`
    (lines `<path> <label>`); link them into `root/by_class/<domain>/<label>/` for image_folder."""
    listing, out = root / "list" / f"{domain}List.txt", root / "by_class" / domain
    if out.is_dir() or not listing.exists():
        return out
    tmp = temporary_beside(out)
    for line in listing.read_text().split("\n"):
        if line.strip():
            path, label = line.split()
            name = Path(path).name
            (tmp / f"{int(label):02d}").mkdir(parents=True, exist_ok=True)
            (tmp / f"{int(label):02d}" / name).symlink_to((root / domain / name).resolve())
    try:
        tmp.rename(out)
    except OSError:  # another run arranged it first
        if not out.is_dir():
            raise
        shutil.rmtree(tmp)
    return out


def _ensure_domains(p: Params) -> None:
    """Office-31 / ImageCLEF-DA: fetch the archive if asked and needed, and arrange ImageCLEF's lists into folders."""
    if p.preset not in ("office31", "image_clef"):
        return
    root = Path(p.root).expanduser()
    roots = [Path(s.root).expanduser() for s in (p.source, p.target)]

    def arrange() -> None:
        if p.preset == "image_clef":
            for domain in (p.source_domain, p.target_domain):
                arrange_image_clef(root, domain)

    arrange()
    if all(r.is_dir() for r in roots):
        return
    missing = ", ".join(str(r) for r in roots if not r.is_dir())
    if not p.download or not p.archive_url:
        raise FileNotFoundError(
            f"data.root={p.root!r}: no folder {missing}; set data.download: true and data.archive_url to fetch "
            f"the {p.preset} archive, or point data.root at the unpacked dataset"
        )
    fetch_archive(p.archive_url, root)
    arrange()
    still = [str(r) for r in roots if not r.is_dir()]
    if still:
        found = sorted(c.name for c in root.iterdir())
        raise FileNotFoundError(
            f"data.archive_url: the archive unpacked into {p.root} ({', '.join(found)}) but {', '.join(still)} "
            "is missing; set data.root to the folder that holds the domain folders"
        )


def _load(spec: Spec) -> DataBundle:
    return DATASETS.get(spec.name).load(spec)


@DATASETS.register("domain_pair")
class DomainPair:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        _ensure_domains(p)
        source, target = _load(p.source), _load(p.target)
        if source.num_classes != target.num_classes:
            raise ValueError(
                f"data.target has {target.num_classes} classes but data.source has {source.num_classes}; "
                "a domain pair needs the same classes on both sides"
            )
        both_folders = p.source.name == p.target.name == "image_folder"
        if both_folders and source.class_names != target.class_names:
            raise ValueError(
                f"data.target has class folders {target.class_names} but data.source has {source.class_names}; "
                "both domains need the same class subfolders"
            )
        target = _target_to_source(p, target, source.input_shape)
        return DataBundle(
            source.train,
            source.val,
            target.test,
            source.num_classes,
            source.input_shape,
            source.class_names,
            target_train=masked(target.train),
        )
