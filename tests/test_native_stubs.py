"""itp/_native.pyi against the compiled extension itp._native.

The stub is parsed with ``ast`` (never imported) and compared with the built module:

* the same public names at module level (constants, functions, classes), private ``_``-prefixed helpers
  included, dunders and pybind11 internals excluded;
* each class declares the same members, with properties as properties (a settable one with a setter) and
  static methods as static methods;
* every function and method has the parameter names, order and defaults of its pybind11 signature (read
  from the first docstring line pybind11 generates, ``name(arg: type = default, ...) -> ret``);
* every constant's runtime value has the type the stub declares.

A binding added, removed or renamed in ``cpp/bindings`` without the matching stub change fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from itp import _native

STUB_PATH = Path(_native.__file__).resolve().parent / "_native.pyi"
if not STUB_PATH.exists():  # an editable install keeps the extension in the build tree
    STUB_PATH = Path(__file__).resolve().parents[1] / "itp" / "_native.pyi"

# Attributes pybind11 adds to every class or module; not part of our interface.
PYBIND_INTERNALS = {"_pybind11_conduit_v1_"}


@dataclass(frozen=True)
class Param:
    name: str
    has_default: bool


@dataclass(frozen=True)
class StubFunction:
    params: tuple[Param, ...]  # without self
    kind: str  # "function", "method", "staticmethod", "property", "property+setter"


@dataclass
class StubClass:
    members: dict[str, StubFunction]
    attributes: set[str]


def _stub_params(fn: ast.FunctionDef, drop_first: bool) -> tuple[Param, ...]:
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    if drop_first:
        positional = positional[1:]
    n_defaults = len(args.defaults)
    first_default = len(positional) - n_defaults
    params = [Param(a.arg, i >= first_default) for i, a in enumerate(positional)]
    params += [Param(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return tuple(params)


def _decorators(fn: ast.FunctionDef) -> list[str]:
    names = []
    for d in fn.decorator_list:
        if isinstance(d, ast.Name):
            names.append(d.id)
        elif isinstance(d, ast.Attribute):
            names.append(d.attr)  # e.g. "setter" of @epsilon.setter
    return names


def parse_stub() -> tuple[dict[str, str], dict[str, StubFunction], dict[str, StubClass]]:
    """(constants name -> annotation source, functions, classes) declared by the stub."""
    tree = ast.parse(STUB_PATH.read_text(encoding="utf-8"))
    constants: dict[str, str] = {}
    functions: dict[str, StubFunction] = {}
    classes: dict[str, StubClass] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            constants[node.target.id] = ast.unparse(node.annotation)
        elif isinstance(node, ast.FunctionDef):
            functions[node.name] = StubFunction(_stub_params(node, drop_first=False), "function")
        elif isinstance(node, ast.ClassDef):
            cls = StubClass(members={}, attributes=set())
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decos = _decorators(item)
                    if "setter" in decos:
                        prop = cls.members[item.name]
                        cls.members[item.name] = StubFunction(prop.params, "property+setter")
                    elif "property" in decos:
                        cls.members[item.name] = StubFunction((), "property")
                    elif "staticmethod" in decos:
                        cls.members[item.name] = StubFunction(
                            _stub_params(item, drop_first=False), "staticmethod"
                        )
                    else:
                        cls.members[item.name] = StubFunction(_stub_params(item, drop_first=True), "method")
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    cls.attributes.add(item.target.id)
            classes[node.name] = cls
    # Module-level aliases such as ``_F32 = npt.NDArray[...]`` are typing helpers, not module names.
    return constants, functions, classes


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def pybind_params(obj: Any, name: str) -> tuple[Param, ...]:
    """Parameter names/defaults from pybind11's generated first docstring line (self dropped)."""
    doc = (inspect.getdoc(obj) or "").splitlines()
    assert doc, f"{name} has no pybind11 signature docstring"
    first = doc[0]
    m = re.match(r"^\s*(\w+)\((.*)\)\s*->", first)
    assert m, f"{name}: cannot parse signature line {first!r}"
    assert m.group(1) == name.rsplit(".", 1)[-1], f"{name}: signature names {m.group(1)!r}"
    params = []
    for part in _split_top_level(m.group(2)):
        pname = part.split(":", 1)[0].strip()
        params.append(Param(pname, "=" in part))
    if params and params[0].name in ("self", "arg0") and "." in name:
        params = params[1:]
    return tuple(params)


def module_names() -> set[str]:
    return {n for n in vars(_native) if not n.startswith("__") and n not in PYBIND_INTERNALS}


def test_stub_file_is_shipped_next_to_the_package() -> None:
    assert STUB_PATH.name == "_native.pyi" and STUB_PATH.exists()
    assert (STUB_PATH.parent / "py.typed").exists()


def test_module_names_match_the_stub_exactly() -> None:
    constants, functions, classes = parse_stub()
    stubbed = set(constants) | set(functions) | set(classes)
    compiled = module_names()
    assert sorted(compiled - stubbed) == [], "compiled names missing from itp/_native.pyi"
    assert sorted(stubbed - compiled) == [], "stubbed names the compiled module does not have"


def test_each_name_has_the_stubbed_kind() -> None:
    constants, functions, classes = parse_stub()
    for name in functions:
        assert callable(getattr(_native, name)) and not inspect.isclass(getattr(_native, name)), name
    for name in classes:
        assert inspect.isclass(getattr(_native, name)), name
    for name in constants:
        value = getattr(_native, name)
        assert not callable(value), name


_SIMPLE_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@pytest.mark.parametrize("name", sorted(parse_stub()[0]))
def test_constant_values_have_the_stubbed_type(name: str) -> None:
    annotation = parse_stub()[0][name]
    value = getattr(_native, name)
    if annotation in _SIMPLE_TYPES:
        assert type(value) is _SIMPLE_TYPES[annotation], f"{name} = {value!r} is not {annotation}"
    elif annotation == "tuple[str, ...]":
        assert isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    elif annotation == "tuple[tuple[int, ...], ...]":
        assert isinstance(value, tuple)
        assert all(isinstance(t, tuple) and all(isinstance(i, int) for i in t) for t in value)
    else:  # pragma: no cover - a new annotation shape needs a rule here
        pytest.fail(f"no runtime check for annotation {annotation!r} of {name}")


@pytest.mark.parametrize("name", sorted(parse_stub()[1]))
def test_function_parameters_match_pybind11(name: str) -> None:
    stub = parse_stub()[1][name]
    assert stub.params == pybind_params(getattr(_native, name), name)


def _class_cases() -> list[tuple[str, str]]:
    _, _, classes = parse_stub()
    cases = []
    for cname, cls in sorted(classes.items()):
        compiled = {
            m
            for m in vars(getattr(_native, cname))
            if (not m.startswith("__") or m == "__init__") and m not in PYBIND_INTERNALS
        }
        for member in sorted(compiled | set(cls.members) | cls.attributes):
            cases.append((cname, member))
    return cases


@pytest.mark.parametrize(("cname", "member"), _class_cases())
def test_class_members_match_pybind11(cname: str, member: str) -> None:
    stub = parse_stub()[2][cname]
    cls = getattr(_native, cname)
    raw = vars(cls).get(member)
    assert raw is not None, f"{cname}.{member} is stubbed but the compiled class has no such member"
    if type(raw).__name__ == "pybind11_static_property":
        # def_property_readonly_static: a value read from the class itself, stubbed as ClassVar.
        assert member in stub.attributes, f"{cname}.{member} must be stubbed as a ClassVar attribute"
        assert not callable(getattr(cls, member)), member
        return
    assert member not in stub.attributes, f"{cname}.{member} is not a class-level value"
    assert member in stub.members, f"{cname}.{member} exists in the compiled class but not in the stub"
    decl = stub.members[member]
    if isinstance(raw, property):
        assert decl.kind in ("property", "property+setter"), f"{cname}.{member} is a property"
        assert (raw.fset is not None) == (decl.kind == "property+setter"), (
            f"{cname}.{member}: setter in stub and module must agree"
        )
    elif isinstance(raw, staticmethod) or type(raw).__name__ == "staticmethod":
        assert decl.kind == "staticmethod", f"{cname}.{member} is a static method"
        assert decl.params == pybind_params(getattr(cls, member), f"{cname}.{member}")
    else:
        assert decl.kind == "method", f"{cname}.{member} is a method"
        assert decl.params == pybind_params(raw, f"{cname}.{member}")


def test_stub_parser_sees_every_kind() -> None:
    """Guards the checks above against a parser that silently finds nothing."""
    constants, functions, classes = parse_stub()
    assert {"NUM_FEATURES", "MAX_REPLAY_CAPACITY", "ACTION_STREAMS"} <= set(constants)
    assert {"normalize_state", "split_task", "heuristic_action", "_ring_push_benchmark"} <= set(functions)
    assert {"PrioritizedReplay", "ExperienceRing", "SumTree", "FusedMlp", "DecisionEngine"} <= set(classes)
    assert classes["PrioritizedReplay"].members["from_snapshot"].kind == "staticmethod"
    assert classes["DecisionEngine"].members["epsilon"].kind == "property+setter"
    assert classes["FusedMlp"].attributes == {"kernel_name"}
    sample = classes["PrioritizedReplay"].members["sample"].params
    assert [p.name for p in sample][:2] == ["batch_size", "beta"]
    assert pybind_params(
        _native.PrioritizedReplay.update_priorities, "PrioritizedReplay.update_priorities"
    ) == (
        Param("indices", False),
        Param("td_errors", False),
        Param("generations", True),
    )
