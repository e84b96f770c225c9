"""docs/configuration.md cannot drift from the model: its table is the output of ``provision config reference``,
every key has a description, and the defaults file ``provision config defaults`` prints is a valid configuration
equal to the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from provision.cli import configdoc
from provision.config import ServerConfig, check_config, load_config
from tests.support.paths import REPO

DOC = REPO / "docs" / "configuration.md"


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the model, walked here independently of configdoc."""
    found = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += leaf_keys(annotation, f"{key}.")
        else:
            found.append(key)
    return found


def test_the_checked_in_reference_is_the_generated_one() -> None:
    text = DOC.read_text()
    assert configdoc.reference() in text, (
        "docs/configuration.md differs from the model: run `provision config reference --write docs/configuration.md`"
    )
    assert configdoc.replace_reference(text) == text


def test_every_key_is_documented_with_its_default_and_a_description() -> None:
    text = DOC.read_text()
    documented = {doc.key: doc for doc in configdoc.config_keys()}
    assert list(documented) == leaf_keys(ServerConfig)
    assert len(documented) >= 40
    for key, doc in documented.items():
        assert len(doc.description) >= 10, f"{key}: Field(description=...) missing in provision/config.py"
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} is not in docs/configuration.md"
        assert doc.default in row, (key, doc.default, row)


def test_rows_say_the_type_bounds_and_default() -> None:
    rows = {doc.key: doc for doc in configdoc.config_keys()}
    assert (rows["dhcp.mode"].type, rows["dhcp.mode"].default) == ("one of proxy, full, off", "proxy")
    assert (rows["ports.http"].bounds, rows["ports.http"].default) == (">= 0, <= 65535", "8080")
    assert rows["dhcp.range_start"].type == "IPv4 address or null"
    assert rows["dhcp.dns"].type == "list of IPv4 address" and rows["dhcp.dns"].default == "[]"
    assert rows["erasure.operator"].bounds == "1 to 64 characters, no control characters"
    assert rows["templates_dir"].default == "the package's pxe/"  # not this checkout's path


def test_the_defaults_file_is_a_valid_configuration_of_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "provision.yaml"
    path.write_text(configdoc.defaults_yaml())
    assert check_config(path) == []
    assert load_config(path) == load_config()


def test_write_replaces_only_the_table(tmp_path: Path) -> None:
    path = tmp_path / "c.md"
    path.write_text(f"# before\n\n{configdoc.BEGIN}\nold table\n{configdoc.END}\n\nafter\n")
    out = configdoc.replace_reference(path.read_text())
    assert out.startswith("# before\n\n") and out.endswith(f"{configdoc.END}\n\nafter\n")
    assert "old table" not in out and "| `dhcp.mode` |" in out
    with pytest.raises(ValueError, match="markers are missing"):
        configdoc.replace_reference("# no markers\n")
