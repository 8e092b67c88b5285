"""The public surface of ``supervisors`` is what ``docs/supervisors.md`` says (trio's
``test_exports`` habit): every ``sv.NAME`` in the doc is exported, everything exported is
documented, ``__all__`` is exactly the public names, and the modules stay private."""

from __future__ import annotations

import re
import types
from pathlib import Path

import supervisors as sv

DOC = Path(__file__).resolve().parents[2] / "docs" / "supervisors.md"


def documented_names() -> set[str]:
    return set(re.findall(r"\bsv\.([A-Za-z_][A-Za-z0-9_]*)", DOC.read_text()))


def public_names() -> set[str]:
    return {
        name
        for name in vars(sv)
        if not name.startswith("_") and not isinstance(getattr(sv, name), types.ModuleType)
    }


def test_every_name_in_the_doc_is_exported():
    missing = {name for name in documented_names() if not hasattr(sv, name)}
    assert missing == set()


def test_everything_exported_is_documented():
    assert public_names() - documented_names() == set()


def test_all_is_the_public_surface():
    assert sorted(sv.__all__) == sorted(public_names())
    assert len(sv.__all__) == len(set(sv.__all__))


def test_modules_are_private():
    modules = {
        name for name, value in vars(sv).items() if isinstance(value, types.ModuleType)
    }
    assert all(name.startswith("_") or name == "testing" for name in modules), modules


def test_exported_objects_come_from_the_private_modules():
    for name in sv.__all__:
        module = getattr(getattr(sv, name), "__module__", None)
        if isinstance(module, str) and module.startswith("supervisors"):
            assert module.split(".")[1].startswith("_"), (name, module)


def test_error_hierarchy_is_the_documented_tree():
    assert issubclass(sv.ActorDeadError, sv.SupervisorsError)
    assert issubclass(sv.MailboxFull, sv.SupervisorsError)
    assert issubclass(sv.CallTimeout, sv.SupervisorsError)
    assert issubclass(sv.CallTimeout, TimeoutError)
    assert issubclass(sv.InvalidChildSpec, ValueError)
    for error in (
        sv.AlreadyStarted,
        sv.AlreadyPresent,
        sv.StartFailed,
        sv.NotFound,
        sv.Running,
        sv.Restarting,
        sv.SimpleOneForOneError,
        sv.SupervisorGone,
    ):
        assert issubclass(error, sv.SupervisorError)
    assert issubclass(sv.SupervisorError, sv.SupervisorsError)


def test_package_ships_py_typed():
    assert (Path(sv.__file__).parent / "py.typed").exists()
