"""How many times a module's forward calls each of its submodules a run, read from the code of its classes.

accelerate's hook on an offloaded module loads the module's weights at each call, so a submodule a forward calls
twice a step (ProphetNet's n-gram self-attention's out_proj, once per stream), or in a loop (HRM's L_module, called
`H_cycles x L_cycles` times; ALBERT's one shared layer group, once per `num_hidden_layers`), is streamed that many
times. The forward's statements are walked as Python runs them, with the values they read from the module itself
(`self.config.num_hidden_layers`, `len(self.layers)`, local names assigned from those): a `for` / `while` loop whose
bound is known runs its body that many times, a `with` body runs once, and a branch, `try`, conditional expression
or a loop whose bound is not known (a tensor's shape, a forward argument) is left out, its calls counted once by the
caller. Methods the forward calls (`self._helper()`, `super().forward()`) are walked too, and a forward or method a
class inherits is read from the parent class that defines it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# The most iterations one loop (its nested loops included) is run for: a loop over a sequence's length read from a
# config (max_position_embeddings) is no loop a forward runs, and walking it would take long.
MAX_LOOP_STEPS = 10_000
# How deep `self.<method>()` calls are followed from forward.
MAX_METHOD_DEPTH = 3


class _Unknown:
    """A value the walk cannot know (a forward argument, a tensor, a name assigned in a branch)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True)
class _ModuleRef:
    """A submodule of the module whose forward is walked, by its name relative to it ("" for the module itself)."""

    path: str
    module: Any


class _Returned(Exception):
    """A `return` reached: the method's remaining statements do not run."""


class _TooLong(Exception):
    """A loop ran past MAX_LOOP_STEPS: it is left out, as a loop of unknown bound."""


# Compound statements and expressions whose body may not run, or runs an unknown number of times
_CONDITIONAL_EXPRESSIONS = (ast.IfExp, ast.BoolOp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                            ast.GeneratorExp)
# Statements that change a loop's flow where a branch holds them: such a loop's count is not known
_FLOW = (ast.Break, ast.Continue, ast.Return, ast.Yield, ast.YieldFrom)
_NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_PLAIN_DATA = (int, float, bool, str, type(None))


@functools.lru_cache(maxsize=1024)
def _own_methods(klass: type) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef] | None:
    """The methods `klass` itself defines, parsed from its source; None where the source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if not classes:
        return None
    return {node.name: node for node in classes[0].body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _read_classes(cls: type) -> list[type]:
    """The classes of `cls`'s MRO whose methods are read: torch's own (nn.Module's forward raises) and object's
    are not."""
    return [klass for klass in cls.__mro__ if klass is not object and not klass.__module__.startswith("torch.")]


_Method = ast.FunctionDef | ast.AsyncFunctionDef


def _resolve(cls: type, name: str, after: type | None = None) -> tuple[type, _Method] | None:
    """(the class defining it, its parsed code) of method `name` as `cls`'s MRO resolves it; with `after`, as
    `super()` called in a method of `after` resolves it (the classes following `after`)."""
    classes = _read_classes(cls)
    if after is not None:
        classes = classes[classes.index(after) + 1:] if after in classes else []
    for klass in classes:
        if name in vars(klass):
            methods = _own_methods(klass)
            return (klass, methods[name]) if methods is not None and name in methods else None
    return None


def _sure_calls(node: ast.AST) -> Iterator[ast.Call]:
    """The calls an expression makes whenever it is evaluated (none in a conditional expression, `and` / `or`,
    lambda or comprehension), outermost first."""
    if isinstance(node, _CONDITIONAL_EXPRESSIONS):
        return
    if isinstance(node, ast.Call):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _sure_calls(child)


def _stored_names(node: ast.AST) -> set[str]:
    """The names a statement may assign."""
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store)}


def _changes_flow(body: list[ast.stmt]) -> bool:
    """Whether a loop body holds a break, continue, return or yield of its own (not one of a nested function)."""
    def walk(node: ast.AST) -> bool:
        if isinstance(node, _FLOW):
            return True
        return any(walk(child) for child in ast.iter_child_nodes(node) if not isinstance(child, _NESTED_SCOPES))

    return any(walk(statement) for statement in body)


class _Walk:
    """One walk of a module's forward: the counts of the calls of its submodules, by their relative names."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.counts: dict[str, int] = {}
        self.steps = 0  # loop iterations run in the outermost loop now running

    # --- values -----------------------------------------------------------------------------------------------

    def value(self, node: ast.AST, env: dict[str, Any]) -> Any:
        """The value of an expression, from the module and the names known; UNKNOWN where it depends on anything
        else."""
        try:
            return self._value(node, env)
        except Exception:  # noqa: BLE001 - any failure of the walk's own evaluation is a value it cannot know
            return UNKNOWN

    def _value(self, node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, _PLAIN_DATA) else UNKNOWN
        if isinstance(node, ast.Name):
            if node.id == "self":
                return _ModuleRef("", self.module)
            return env.get(node.id, _BUILTINS.get(node.id, UNKNOWN))
        if isinstance(node, ast.Attribute):
            return self._attribute(self._value(node.value, env), node.attr)
        if isinstance(node, ast.Subscript):
            return self._item(self._value(node.value, env), node.slice, env)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self._value(element, env) for element in node.elts]
            return UNKNOWN if any(item is UNKNOWN for item in items) else tuple(items)
        if isinstance(node, ast.BinOp):
            return _binary(node.op, self._value(node.left, env), self._value(node.right, env))
        if isinstance(node, ast.UnaryOp):
            operand = self._value(node.operand, env)
            if operand is UNKNOWN or not isinstance(operand, (int, float, bool)):
                return UNKNOWN
            return {ast.USub: lambda v: -v, ast.UAdd: lambda v: +v, ast.Not: lambda v: not v}.get(
                type(node.op), lambda v: UNKNOWN)(operand)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return _compare(node.ops[0], self._value(node.left, env), self._value(node.comparators[0], env))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in env \
                and node.func.id in _BUILTINS and not node.keywords:
            args = [self._value(arg, env) for arg in node.args]
            if any(arg is UNKNOWN for arg in args):
                return UNKNOWN
            return _BUILTINS[node.func.id](*args)
        return UNKNOWN

    def _attribute(self, base: Any, name: str) -> Any:
        import torch

        if base is UNKNOWN:
            return UNKNOWN
        if isinstance(base, _ModuleRef):
            child = base.module._modules.get(name)
            if child is not None:
                return _ModuleRef(f"{base.path}.{name}" if base.path else name, child)
            found = getattr(base.module, name, UNKNOWN)
        else:
            found = getattr(base, name, UNKNOWN)
        if isinstance(found, (torch.nn.Module, torch.Tensor)) or callable(found):
            return UNKNOWN  # a module held outside the tree, a tensor, a function: nothing to count on
        return found

    def _item(self, base: Any, index_node: ast.AST, env: dict[str, Any]) -> Any:
        import torch

        if isinstance(index_node, ast.Slice):
            bounds = [None if part is None else self._value(part, env)
                      for part in (index_node.lower, index_node.upper, index_node.step)]
            if any(bound is UNKNOWN for bound in bounds):
                return UNKNOWN
            index: Any = slice(*bounds)
        else:
            index = self._value(index_node, env)
        if base is UNKNOWN or index is UNKNOWN:
            return UNKNOWN
        if isinstance(base, _ModuleRef):
            module = base.module
            if isinstance(module, torch.nn.ModuleDict) and isinstance(index, str):
                return self._attribute(base, index)
            if not isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
                return UNKNOWN
            names = list(module._modules)
            if isinstance(index, slice):
                return tuple(self._attribute(base, name) for name in names[index])
            if isinstance(index, int) and not isinstance(index, bool):
                return self._attribute(base, names[index])
            return UNKNOWN
        if isinstance(base, (list, tuple, dict, str, range)):
            found = base[index]
            return found if isinstance(found, (*_PLAIN_DATA, list, tuple, dict)) else UNKNOWN
        return UNKNOWN

    def items(self, value: Any) -> list[Any] | None:
        """What a `for` over `value` binds, in order; None where that is not known or too long."""
        import torch

        if isinstance(value, _ModuleRef):
            children = _children(value)
            if children is not None:
                return list(children)
            if isinstance(value.module, torch.nn.ModuleDict):
                return list(value.module._modules)
            return None
        if isinstance(value, (range, list, tuple)) and len(value) <= MAX_LOOP_STEPS:
            return list(value)
        return None

    # --- statements -------------------------------------------------------------------------------------------

    def run(self, body: list[ast.stmt], env: dict[str, Any], times: int, klass: type, depth: int) -> None:
        for statement in body:
            self.statement(statement, env, times, klass, depth)

    def statement(self, node: ast.stmt, env: dict[str, Any], times: int, klass: type, depth: int) -> None:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            if node.value is None:
                return
            self.calls(node.value, env, times, klass, depth)
            value = self.value(node.value, env)
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                _bind(target, value, env)
        elif isinstance(node, ast.AugAssign):
            self.calls(node.value, env, times, klass, depth)
            if isinstance(node.target, ast.Name):
                env[node.target.id] = _binary(node.op, env.get(node.target.id, UNKNOWN), self.value(node.value, env))
        elif isinstance(node, (ast.Expr, ast.Return)):
            if node.value is not None:
                self.calls(node.value, env, times, klass, depth)
            if isinstance(node, ast.Return):
                raise _Returned
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.calls(item.context_expr, env, times, klass, depth)
                if item.optional_vars is not None:
                    _bind(item.optional_vars, UNKNOWN, env)
            self.run(node.body, env, times, klass, depth)
        elif isinstance(node, (ast.For, ast.While)):
            self.loop(node, env, times, klass, depth)
        else:
            # a branch, a try, a match, a nested function, an async for: what it assigns is no longer known, and its
            # calls are left out
            for name in _stored_names(node):
                env[name] = UNKNOWN

    def loop(self, node: ast.For | ast.While, env: dict[str, Any], times: int, klass: type, depth: int) -> None:
        """Run a loop's body as many times as it runs, where that is known; else leave its calls out."""
        outermost = self.steps == 0
        counts_before, env_before = dict(self.counts), dict(env)
        try:
            if _changes_flow(node.body) or node.orelse:
                raise _TooLong
            if isinstance(node, ast.For):
                self.calls(node.iter, env, times, klass, depth)
                items = self.items(self.value(node.iter, env))
                if items is None:
                    raise _TooLong
                for item in items:
                    self.tick()
                    _bind(node.target, item, env)
                    self.run(node.body, env, times, klass, depth)
            else:
                while True:
                    test = self.value(node.test, env)
                    if test is UNKNOWN:
                        raise _TooLong
                    if not test:
                        break
                    self.tick()
                    self.run(node.body, env, times, klass, depth)
        except _TooLong:
            if not outermost:
                raise  # the outermost loop is the one left out
            self.counts = counts_before
            env.clear()
            env.update(env_before)
            for name in _stored_names(node):
                env[name] = UNKNOWN
        finally:
            if outermost:
                self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_LOOP_STEPS:
            raise _TooLong

    def calls(self, node: ast.AST, env: dict[str, Any], times: int, klass: type, depth: int) -> None:
        """Count the calls an expression surely makes: of submodules, and through the methods it calls."""
        for call in _sure_calls(node):
            target = call.func
            # super().forward(...), super().method(...): the parent's code
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Call) \
                    and isinstance(target.value.func, ast.Name) and target.value.func.id == "super":
                self.method(target.attr, times, depth, after=klass)
                continue
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self" \
                    and target.attr not in self.module._modules:
                if target.attr != "forward":
                    self.method(target.attr, times, depth)
                continue
            called = self.value(target, env)
            if isinstance(called, _ModuleRef) and called.path:
                self.counts[called.path] = self.counts.get(called.path, 0) + times

    def method(self, name: str, times: int, depth: int, after: type | None = None) -> None:
        """Walk `self.<name>()` (or `super().<name>()` called from a method of `after`) as the MRO resolves it."""
        if depth >= MAX_METHOD_DEPTH:
            return
        found = _resolve(type(self.module), name, after)
        if found is None:
            return
        klass, code = found
        with contextlib.suppress(_Returned):  # a return ends the method's walk
            self.run(code.body, {}, times, klass, depth + 1)


def _bind(target: ast.AST, value: Any, env: dict[str, Any]) -> None:
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)):
        values = value if isinstance(value, (tuple, list)) and len(value) == len(target.elts) else None
        for index, element in enumerate(target.elts):
            _bind(element, UNKNOWN if values is None else values[index], env)
    # an attribute or item assigned (self.x = ..., d[k] = ...): nothing the walk reads back


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    numbers = (int, float)
    if not (isinstance(left, numbers) and isinstance(right, numbers)):
        return UNKNOWN
    if isinstance(op, ast.Pow) and abs(right) > 64:
        return UNKNOWN
    operations = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right, ast.Mult: lambda: left * right,
                  ast.Div: lambda: left / right, ast.FloorDiv: lambda: left // right, ast.Mod: lambda: left % right,
                  ast.Pow: lambda: left ** right}
    operation = operations.get(type(op))
    return UNKNOWN if operation is None else operation()


def _compare(op: ast.cmpop, left: Any, right: Any) -> Any:
    if left is UNKNOWN or right is UNKNOWN:
        return UNKNOWN
    operations = {ast.Lt: lambda: left < right, ast.LtE: lambda: left <= right, ast.Gt: lambda: left > right,
                  ast.GtE: lambda: left >= right, ast.Eq: lambda: left == right, ast.NotEq: lambda: left != right}
    operation = operations.get(type(op))
    return UNKNOWN if operation is None else bool(operation())


def _length(value: Any) -> Any:
    import torch

    if isinstance(value, _ModuleRef):
        return len(value.module) if isinstance(value.module, (torch.nn.ModuleList, torch.nn.Sequential,
                                                               torch.nn.ModuleDict)) else UNKNOWN
    return len(value) if isinstance(value, (list, tuple, range, str, dict)) else UNKNOWN


def _ranged(*args: Any) -> Any:
    if not all(isinstance(arg, int) and not isinstance(arg, bool) for arg in args):
        return UNKNOWN
    steps = range(*args)
    return steps if len(steps) <= MAX_LOOP_STEPS else UNKNOWN


def _numeric(function: Any) -> Any:
    def call(*args: Any) -> Any:
        if not all(isinstance(arg, (int, float)) for arg in args):
            return UNKNOWN
        return function(*args)
    return call


def _children(ref: _ModuleRef) -> tuple[_ModuleRef, ...] | None:
    """The items a ModuleList or Sequential yields, as references; None for any other module."""
    import torch

    if not isinstance(ref.module, (torch.nn.ModuleList, torch.nn.Sequential)):
        return None
    return tuple(_ModuleRef(f"{ref.path}.{name}" if ref.path else name, child)
                 for name, child in ref.module._modules.items() if child is not None)


def _enumerated(value: Any, start: int = 0) -> Any:
    if isinstance(value, _ModuleRef):
        value = _children(value)
    return UNKNOWN if not isinstance(value, (list, tuple, range)) else tuple(enumerate(value, start))


# The builtins a forward's loop bounds are made of (`range(len(self.layers))`, `int(n / groups)`)
_BUILTINS: dict[str, Any] = {
    "range": _ranged, "len": _length, "int": _numeric(int), "float": _numeric(float), "abs": _numeric(abs),
    "min": _numeric(min), "max": _numeric(max), "round": _numeric(round), "enumerate": _enumerated,
    "list": lambda value: list(value) if isinstance(value, (list, tuple, range)) else UNKNOWN,
    "reversed": lambda value: tuple(reversed(value)) if isinstance(value, (list, tuple, range)) else UNKNOWN,
}


@functools.lru_cache(maxsize=1024)
def attributes_read(cls: type) -> frozenset[str] | None:
    """The attribute paths of `self` the code of `cls` and its parents (torch's left out) reads anywhere, called or
    not, in a branch or not: `self.embeddings.norm(x)` reads "embeddings" and "embeddings.norm", `self.layers[0]`
    reads "layers"; an attribute only set (`self.norm = nn.LayerNorm(...)`) is not read. None where the code of a
    class cannot be read.

    What a forward may call beyond the calls `calls_per_forward` is sure of: a submodule read nowhere in its
    class's code is never called by it (PPDocLayoutV2's text embeddings hold a `norm` that their forward never
    runs; their caller does).
    """
    named: set[str] = set()
    for klass in _read_classes(cls):
        methods = _own_methods(klass)
        if methods is None:
            return None
        for method in methods.values():
            for node in ast.walk(method):
                if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
                    continue  # `self.norm = nn.LayerNorm(...)` in __init__ names what it sets, not what it runs
                chain: list[str] = []
                while isinstance(node, ast.Attribute):
                    chain.append(node.attr)
                    node = node.value
                if chain and isinstance(node, ast.Name) and node.id == "self":
                    chain.reverse()
                    named.update(".".join(chain[:end]) for end in range(1, len(chain) + 1))
    return frozenset(named)


def calls_per_forward(module: Any) -> dict[str, int]:
    """{submodule name relative to `module`: the times `module.forward` calls it whenever it runs}, for the calls
    it surely makes: in its body, in loops whose bound it knows, through the methods it calls. A submodule of a
    ModuleList is named with its index ("layers.0"). {} where no forward's source can be read.

    Example: HRM's HrmTextModel with H_cycles 2 and L_cycles 3 -> {"embed_tokens": 1, "rotary_emb": 1,
    "L_module": 6, "H_module": 2}.
    """
    walk = _Walk(module)
    walk.method("forward", 1, -1)
    return walk.counts
