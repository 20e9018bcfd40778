"""VGG16 as torchvision lays it out, and the module map the README gives."""
import re
from pathlib import Path

import pytest
import torch

from labkit import model

ROOT = Path(__file__).resolve().parents[1]


def test_build_vgg16_has_torchvisions_names():
    vgg = model.build_vgg16("random", hidden=(16, 8, 4))
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


def test_dropout_keeps_one_minus_p_unbiased_and_its_gradient_is_its_mask():
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        drop = model.Dropout(p).train()
        x = torch.ones(512, 1024, requires_grad=True)
        y = drop(x)
        kept = y != 0
        assert abs(float(kept.float().mean()) - (1 - p)) < 0.005  # 524,288 draws: 3 sigma is under 0.002
        assert torch.equal(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # kept values scaled, the rest zero
        y.backward(torch.full_like(y, 2.0))
        assert torch.equal(x.grad, kept * (2.0 / (1 - p)))
    # each of the 4 activations that share one 64-bit draw is kept independently (16 bits each)
    keep = (model.Dropout(0.5).train()(torch.ones(200_000, 4)) != 0).float()
    assert abs(float((keep[:, 0] * keep[:, 1]).mean()) - 0.25) < 0.005
    assert abs(float((keep[:, 2] * keep[:, 3]).mean()) - 0.25) < 0.005
    drop = model.Dropout(0.5).eval()
    x = torch.randn(8, 12)
    assert torch.equal(drop(x), x)
    assert torch.equal(model.Dropout(1.0).train()(x), torch.zeros_like(x))
    assert isinstance(model.build_head((32, 16, 8)).layers[2], torch.nn.Dropout)  # a Dropout to every check


def test_features_avgpool_classifier_compose_as_torchvision_composes_them():
    """torchvision's idiom, at both map sizes the lab uses (32 px: 1 x 1 maps; 224 px: 7 x 7), in eval mode;
    the head reading the maps directly (how the caches are used) gives the same logits."""
    for size in (32, 224):
        vgg = model.build_vgg16("random", hidden=(16, 8, 4), image_size=size).eval()
        vgg.classifier.norm.set_stats(torch.rand(vgg.classifier.norm.mean.shape),
                                      torch.rand(vgg.classifier.norm.std.shape) + 0.5)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            maps = vgg.features(x)
            torchvision_way = vgg.classifier(torch.flatten(vgg.avgpool(maps), 1))
            assert torch.equal(torchvision_way, vgg(x))
            assert torch.allclose(vgg.classifier(maps), torchvision_way, atol=1e-5)
    odd = model.build_head((16, 8), map_size=3)
    with pytest.raises(ValueError, match="backbone's maps"):
        odd(torch.zeros(1, 25088))
    with pytest.raises(ValueError, match="25,088 columns"):
        model.build_head((16, 8))(torch.zeros(1, 512))


def test_no_labkit_modules_import_each_other():
    """Issue 20: a cycle of imports (device <-> distributed was one) makes the order of imports matter."""
    import ast

    deps = {}
    for path in (ROOT / "labkit").glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        deps[path.stem] = found

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and m in deps and reaches(m, goal, (*seen, m))) for m in deps[start])

    cycles = sorted(name for name in deps if reaches(name, name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_inner_layers_take_no_progress_or_log_parameter():
    """Issue 20: bars and messages come from the reporter (labkit.progress), not a parameter threaded through."""
    import inspect

    from labkit import capacity, features, finegrained, memorization, progress, prune, train

    threaded = [f"{module.__name__}.{name}({p})" for module in (prune, train, features, capacity, finegrained,
                                                               memorization)
                for name, fn in vars(module).items()
                if callable(fn) and getattr(fn, "__module__", None) == module.__name__
                for p in (inspect.signature(fn).parameters if inspect.isfunction(fn) else ())
                if p in ("progress", "log")]
    assert not threaded, threaded
    said = []
    with progress.reporting(bars=False, log=said.append):
        progress.say("one")
        with progress.reporting(log=None):  # the inner block silences messages and keeps bars off
            progress.say("two")
            assert progress.current().bars is False
        progress.say("three")
    assert said == ["one", "three"] and progress.current().log is print
