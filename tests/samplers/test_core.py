"""The sampler core stands alone: its modules import torch and the standard library's math and
typing only, importing it loads nothing of the application, training or the dashboard, and
`import samplers` itself loads no torch until a name is used."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samplers.filters import gaussian_blur

CORE = Path(__file__).resolve().parents[2] / "samplers"
ALLOWED = {"__future__", "collections", "dataclasses", "math", "typing", "torch"}
LAZY_EXPORTS = {"importlib"}  # __init__.py loads its names from the core's modules on first use


@pytest.mark.parametrize(
    "module", sorted(p.name for p in CORE.glob("*.py") if p.name != "__main__.py")
)
def test_core_module_imports_torch_and_the_standard_library_only(module):
    tree = ast.parse((CORE / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling core module, never the application
                assert not (node.module or "").startswith("app"), (module, node.module)
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            allowed = ALLOWED | LAZY_EXPORTS if module == "__init__.py" else ALLOWED
            assert name.split(".")[0] in allowed, f"{module} imports {name}"


def test_importing_the_core_loads_no_application_code():
    code = (
        "import sys, samplers; [getattr(samplers, name) for name in samplers.__all__]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('training', 'dashboard', 'PIL', 'torchvision', 'diffusers', 'streamlit') "
        "or m.startswith('samplers.app')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_loads_its_names_on_first_use():
    """`import samplers` loads no torch; each exported name is the object its module defines,
    as the TYPE_CHECKING imports of samplers/__init__.py say."""
    code = "import sys, samplers, samplers.table, samplers.course; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

    import importlib

    import samplers

    tree = ast.parse((CORE / "__init__.py").read_text())
    sources = {
        alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert sorted(sources) == sorted(samplers.__all__)
    for name, module in sources.items():
        assert getattr(samplers, name) is getattr(
            importlib.import_module(f"samplers.{module}"), name
        )
    with pytest.raises(AttributeError, match="no attribute 'sample_rk4'"):
        samplers.sample_rk4  # noqa: B018


@pytest.mark.parametrize(
    "shape, kernel_size, sigma",
    [((2, 3, 64, 64), 33, 2.0), ((1, 1, 28, 28), 15, 0.875), ((2, 1, 28, 20), 5, 2.0)],
)
def test_gaussian_blur_equals_torchvision(shape, kernel_size, sigma):
    import torchvision.transforms.functional as TF

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = TF.gaussian_blur(x, kernel_size, sigma)
    torch.testing.assert_close(gaussian_blur(x, kernel_size, sigma), expected, atol=1e-6, rtol=0)


def test_gaussian_blur_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="odd kernel_size"):
        gaussian_blur(torch.zeros(1, 1, 8, 8), 4, 1.0)
