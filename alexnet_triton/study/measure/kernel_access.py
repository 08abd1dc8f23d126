"""Which pointer arguments a Triton kernel loads from and stores to, read from its source (no GPU, no compile).

``accesses(kernel)`` parses the ``@triton.jit`` function: each name assigned in it depends on the parameters its
value is computed from (transitively: ``ptrs = x_ptr + offs`` makes ``ptrs`` an ``x_ptr`` pointer; ``a, b = x, y``
pairs its sides); a ``tl.load`` / ``tl.store`` (or ``tl.atomic_*``: both) of an expression counts for every
parameter it depends on;
a call to another ``@triton.jit`` function of the kernel's module maps that helper's own accesses back through
its arguments. A branch under a flag the launch passes as False (``if FLAG:``'s body, ``if not FLAG:``'s else) is
skipped; other conditions are not evaluated: an access under them counts even where the launch turns it off (an
over-count, never an under-count, of what a launch can move).

``launch_bytes(kernel, args)``: bytes a launch loads plus bytes it stores, each tensor argument counted once per
direction (numel x element size; an in-place update twice), arguments aliasing one tensor merged. A tensor the
analysis cannot place (reached only through a call it cannot follow) counts once.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

import torch
from torch.utils._pytree import tree_leaves

LOADS = {"load"}
STORES = {"store"}
BOTH_PREFIX = "atomic_"


def _switched_off(function: ast.FunctionDef, off: frozenset[str]) -> set[int]:
    """ids of the nodes of ``function`` that run only where a flag named in ``off`` is true."""
    skipped = set()
    for branch in (n for n in ast.walk(function) if isinstance(n, ast.If)):
        test, body = branch.test, branch.body
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test, body = test.operand, branch.orelse
        if isinstance(test, ast.Name) and test.id in off:
            skipped |= {id(n) for statement in body for n in ast.walk(statement)}
    return skipped


@functools.cache
def accesses(fn, off: frozenset[str] = frozenset()) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(loaded, stored, passed on) parameter names of the Python function ``fn`` of a Triton kernel whose flags
    ``off`` are False; "passed on": given to a call this analysis cannot follow."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    params = [a.arg for a in function.args.args]
    depends: dict[str, set[str]] = {p: {p} for p in params}
    skipped = _switched_off(function, off)
    nodes = [n for n in ast.walk(function) if id(n) not in skipped]

    def deps(expr) -> set[str]:
        return set().union(*(depends.get(n.id, set()) for n in ast.walk(expr) if isinstance(n, ast.Name)))

    for _ in range(3):  # to a fixed point over loops (a name assigned later in the body, used earlier)
        for n in nodes:
            targets = (n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign | ast.For)
                       else [])
            value = n.iter if isinstance(n, ast.For) else getattr(n, "value", None)
            for target in targets:
                pairs = [(target, value)]
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and \
                        len(target.elts) == len(value.elts):  # a, b = x, y: a from x, b from y
                    pairs = list(zip(target.elts, value.elts, strict=True))
                for part, source in pairs:
                    for name in (t.id for t in ast.walk(part) if isinstance(t, ast.Name)):
                        depends[name] = depends.get(name, set()) | deps(source)
    loaded, stored, passed = set(), set(), set()
    for call in (n for n in nodes if isinstance(n, ast.Call)):
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "tl":
            pointer = deps(call.args[0]) if call.args else set()
            if func.attr in LOADS or func.attr.startswith(BOTH_PREFIX):
                loaded |= pointer
            if func.attr in STORES or func.attr.startswith(BOTH_PREFIX):
                stored |= pointer
            continue
        helper = fn.__globals__.get(func.id) if isinstance(func, ast.Name) else None
        inner = getattr(helper, "fn", None)
        if inner is None:
            passed |= set().union(*(deps(a) for a in [*call.args, *(k.value for k in call.keywords)]))
            continue
        names = list(inspect.signature(inner).parameters)
        actual = dict(zip(names, call.args, strict=False)) | {k.arg: k.value for k in call.keywords}
        sub_loaded, sub_stored, sub_passed = accesses(inner)
        for into, sub in ((loaded, sub_loaded), (stored, sub_stored), (passed, sub_passed)):
            into |= set().union(*(deps(actual[p]) for p in sub if p in actual))
    return frozenset(loaded), frozenset(stored), frozenset(passed - loaded - stored)


def launch_bytes(kernel, args: dict) -> int:
    """Bytes loaded plus bytes stored by a launch of ``kernel`` (a ``@triton.jit`` function) with keyword
    ``args`` (module docstring; a tuple argument: each of its tensors)."""
    loaded, stored, _ = accesses(kernel.fn, frozenset(name for name, value in args.items() if value is False))
    tensors: dict[int, list] = {}  # data_ptr -> [bytes, loaded, stored]
    for name, value in args.items():
        for t in (leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)):  # a tuple: each tensor
            entry = tensors.setdefault(t.data_ptr(), [t.numel() * t.element_size(), False, False])
            entry[1] |= name in loaded
            entry[2] |= name in stored
    return sum(size * ((load + store) or 1) for size, load, store in tensors.values())
