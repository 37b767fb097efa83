"""Every model family of docs/models.md builds, runs through SegmentationModel and takes NAA and the
reliable ensemble, by running the page's snippets as written (common lines + family + check)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
SECTION = PAGE.read_text().split("## Model families", 1)[1]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)
COMMON, *FAMILY_BLOCKS, CHECK = BLOCKS
FAMILIES = {re.match(r"# family: (.+)\n", block).group(1): block for block in FAMILY_BLOCKS}
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def test_the_page_lists_the_twelve_families_in_its_table():
    assert len(FAMILIES) == 12 and all(block.startswith("# family: ") for block in FAMILY_BLOCKS)
    table = SECTION.split("**What")[0]
    for name in FAMILIES:
        family = name.split(" (")[0].replace("smp ", "smp ")
        assert family.split()[1] in table, name


def _snippet(name: str) -> dict:
    """The page's snippet for family ``name``, run as written; its namespace (model, images, masks)."""
    block = FAMILIES[name]
    if "transformers" in block and not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed (pip install 'segrobust[hf]')")
    namespace: dict = {"__name__": f"docs_models_{name}"}
    exec(compile(COMMON + block + CHECK, f"docs/models.md: {name}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_family_snippet_runs_naa_and_the_reliable_ensemble(name):
    namespace = _snippet(name)
    assert not any(module.training for module in namespace["model"].model.modules())  # eval mode kept


@pytest.mark.parametrize("amp", [None, "bf16"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_attack_runs_on_every_family_in_float32_and_under_bf16_autocast(name, amp):
    """Each attack of the benchmark's registry (one iteration; the reliable ensemble's members one each) on
    the family's model, in float32 and with the forward under bfloat16 autocast: finite images in [0, 1],
    the pixel part inside the ε ball (RainAttack adds rain beside it, so only [0, 1] is checked there)."""
    from segrobust.attacks.registry import ATTACKS

    namespace = _snippet(name)
    model, images, masks = namespace["model"], namespace["images"], namespace["masks"]
    eps = 4 / 255
    for key, entry in ATTACKS.items():
        torch.manual_seed(0)
        attack = entry.build(model, eps, None, 1, random_start=True, ignore_index=255, amp=amp)
        adversarial = attack(images, masks)
        assert adversarial.shape == images.shape and bool(torch.isfinite(adversarial).all()), key
        assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1, key
        if key != "rain_attack":
            assert float((adversarial.double() - images.double()).abs().max()) <= eps, key  # exact differences
