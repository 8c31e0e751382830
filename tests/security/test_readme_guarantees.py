"""README's privacy model lists each tested guarantee with a test file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _privacy_model() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Privacy model", 1)[1].split("\n## ", 1)[0]


def test_the_privacy_model_names_the_test_of_each_guarantee() -> None:
    section = _privacy_model()
    listed = section.split("**Tested guarantees**", 1)[1].split("- **Limits:**", 1)[0]
    for guarantee, proof in [
            ("Default policy when none is given", "tests/privacy/test_policy.py"),
            ("App approval", "tests/security/test_deploy_app_approval.py"),
            ("Control API access", "tests/security/test_deploy_control_access.py"),
            ("Refusals are noted", "tests/security/test_refusal_notes.py"),
            ("Bounded before allocation", "tests/security/test_message_bounds.py")]:
        item = listed.split(f"*{guarantee}", 1)[1].split("\n  - *", 1)[0]
        assert proof in item, guarantee


def test_every_test_file_the_privacy_model_names_exists() -> None:
    named = set(re.findall(r"`(tests/[\w/]+\.py)`", _privacy_model()))
    assert len(named) >= 8
    assert [p for p in sorted(named) if not (ROOT / p).is_file()] == []
