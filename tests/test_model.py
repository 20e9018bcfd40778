"""VGG16 as torchvision lays it out, and the module map the README gives."""
import re
from pathlib import Path

import torch

from labkit import model

ROOT = Path(__file__).resolve().parents[1]


def test_build_vgg16_has_torchvisions_names():
    vgg = model.build_vgg16("none", head=(16, 8, 4))
    assert isinstance(vgg.classifier, model.VGGHead) and vgg.classifier.widths() == [25088, 16, 8, 4, 10]
    assert isinstance(vgg.features, torch.nn.Sequential) and len(vgg.features) == 31  # VGG16's 13 convolutions
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.features) == 13
    assert not any(p.requires_grad for p in vgg.features.parameters())
    assert vgg.avgpool is vgg.classifier.pool and vgg.avgpool.output_size == (7, 7)
    assert vgg.head is vgg.classifier and vgg.backbone is vgg.features  # the other names notebooks used
    images = torch.randn(2, 3, 32, 32)
    assert vgg(images).shape == (2, 10)


def test_readme_module_map_matches_the_files():
    listed = set(re.findall(r"`labkit\.([a-z_]+)`", (ROOT / "README.md").read_text()))
    files = {p.stem for p in (ROOT / "labkit").glob("*.py") if p.stem != "__init__"}
    assert listed == files
    for path in (ROOT / "labkit").glob("*.py"):  # every module opens with a docstring naming what it owns
        first = path.read_text().lstrip()
        assert first.startswith('"""') and len(first.split("\n", 1)[0]) > 20, path.name
