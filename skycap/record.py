"""Record: a small plain data class for the modules on `skycap logs`' path.

`dataclasses` imports `inspect` (ast, dis, tokenize...): about 10 ms of a `skycap logs` whose whole
work is two API requests, where the time to the first line is the point. A Record behaves like a
dataclass with its defaults, for what this project uses of one: the fields are the class's annotations,
in order; a field's default is its class attribute, or `fresh(factory)` for a new value per instance
(a dataclass's field(default_factory=...)); the __init__ takes them by position or name; two records
are equal when of the same class with equal fields (and unhashable, as a dataclass with eq); the repr
is ClassName(field=value, ...), without the fields made with fresh(..., repr=False).
"""

from __future__ import annotations

_MISSING = object()


class fresh:
    """The default of a field whose value is factory() made for each record (a list, a dict...)."""

    def __init__(self, factory, repr: bool = True):  # noqa: A002 - the name dataclasses' field() uses
        self.factory = factory
        self.repr = repr


class Record:
    _fields: tuple[str, ...] = ()
    _defaults: dict = {}
    __hash__ = None  # equal records compare by value, as a dataclass with eq=True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = list(cls.__dict__.get("__annotations__", {}))
        cls._fields = tuple(name for name in cls._fields if name not in own) + tuple(own)
        cls._defaults = {**cls._defaults, **{name: cls.__dict__[name] for name in own if name in cls.__dict__}}
        for name in own:  # a fresh() default is not a class attribute the instances would share
            if isinstance(cls.__dict__.get(name), fresh):
                delattr(cls, name)

    def __init__(self, *args, **kwargs):
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} arguments, {len(args)} given")
        given = dict(zip(self._fields, args))
        for name, value in kwargs.items():
            if name not in self._fields or name in given:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated argument {name!r}")
            given[name] = value
        for name in self._fields:
            value = given.get(name, self._defaults.get(name, _MISSING))
            if value is _MISSING:
                raise TypeError(f"{type(self).__name__}() missing the argument {name!r}")
            setattr(self, name, value.factory() if isinstance(value, fresh) and name not in given else value)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = [name for name in self._fields
                 if not (isinstance(self._defaults.get(name), fresh) and not self._defaults[name].repr)]
        return f"{type(self).__qualname__}({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"
