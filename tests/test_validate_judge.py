"""tools/validate_judge.py: the eye audit's labels and how the judge of another revision loads."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import shapes  # noqa: E402
import validate_judge  # noqa: E402
from eval_default_model import prompt_set  # noqa: E402


def test_audit_labels_are_the_eval_pictures_140_to_199() -> None:
    labels = validate_judge.audit_labels()
    assert sorted(labels) == list(range(140, 200))
    assert set(labels.values()) <= {*shapes.SHAPES, "?"}
    # the table's seeds and prompts are the eval's own, so the pictures regenerate exactly
    prompts = prompt_set(200, unseen=False, seed=1)
    table = re.findall(r"^\| (\d+) \| (\d+) \| [a-z?]+ \| (.+) \|$", validate_judge.AUDIT.read_text(), re.M)  # fmt: skip
    assert len(table) == 60
    for number, seed, prompt in table:
        _, expected_prompt, expected_seed = prompts[int(number)]
        assert (int(seed), prompt) == (expected_seed, expected_prompt)


def test_judge_at_a_revision_is_its_own_module() -> None:
    then = validate_judge.judge_at("HEAD")
    assert then is not shapes and then.__name__ == "shapes_then"
    assert then.SHAPES == shapes.SHAPES
