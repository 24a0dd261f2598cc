"""The class map: class names in id order, written as `labels.json` beside shards and models.

Training, evaluation and serving all read the same file, so class id 3 means the same thing
everywhere. TensorFlow-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kubedetect.errors import KubedetectError
from kubedetect.io import fs

FILENAME = "labels.json"


@dataclass(frozen=True)
class ClassMap:
    names: tuple[str, ...]

    def __post_init__(self):
        if not self.names:
            raise KubedetectError("a class map needs at least one class")
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise KubedetectError(f"class names must be unique; repeated: {', '.join(duplicates)}")
        blank = [i for i, n in enumerate(self.names) if not n.strip()]
        if blank:
            raise KubedetectError(f"class names must not be blank (ids {blank})")

    @classmethod
    def from_data(cls, names: Iterable[str]) -> ClassMap:
        """The classes seen in the data, sorted: the same data always gives the same ids."""
        return cls(tuple(sorted(set(names))))

    @classmethod
    def from_list(cls, names: Sequence[str]) -> ClassMap:
        """Classes given by the user, in the user's order."""
        return cls(tuple(names))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def id(self, name: str) -> int:
        return self.names.index(name)

    def name(self, class_id: int) -> str:
        return self.names[class_id]

    def to_json(self) -> str:
        return json.dumps({"classes": list(self.names)}, indent=2) + "\n"

    def save(self, folder: str) -> str:
        path = fs.join(folder, FILENAME)
        fs.write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, path_or_folder: str) -> ClassMap:
        path = path_or_folder
        if fs.isdir(path_or_folder):
            path = fs.join(path_or_folder, FILENAME)
        try:
            payload = json.loads(fs.read_text(path))
            names = payload["classes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KubedetectError(f"{path}: not a kubedetect labels.json ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise KubedetectError(f"{path}: 'classes' must be a list of strings")
        return cls(tuple(names))
