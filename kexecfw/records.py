"""Small immutable records with named fields, written like ``typing.NamedTuple`` but importing nothing.

The dump readers make these by the thousand (program headers, notes, physical ranges, log
records), and ``vmcore dmesg`` in a capture kernel must start about as fast as the interpreter:
``collections`` (for ``namedtuple``) costs ~1.5 ms to import and each namedtuple class ~0.1 ms to
build, a third of that command's whole budget over a bare ``python -c pass``. A subclass of
:class:`TupleRecord` is a real tuple (unpacking, ``==``, ordering and hashing are the tuple's),
with a read-only property per field and a repr naming them::

    class PhysRange(TupleRecord):
        start: int
        end: int
        vaddr: int | None = None      # a default: every field after it needs one too

    PhysRange(0, 4096)                # PhysRange(start=0, end=4096, vaddr=None)

Fields are the class's own annotations, in order; construction is positional only.
"""
from __future__ import annotations


class TupleRecord(tuple):
    """Base class: see the module docstring."""

    __slots__ = ()
    _fields = ()        # the field names, set for each subclass

    def __init_subclass__(cls) -> None:
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = tuple(cls.__dict__[name] for name in names if name in cls.__dict__)
        required = len(names) - len(defaults)
        if any(name in cls.__dict__ for name in names[:required]):
            raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
        cls._fields = names
        for i, name in enumerate(names):
            # a lambda, not operator.itemgetter: importing operator costs more than all the accesses
            setattr(cls, name, property(lambda self, _i=i: self[_i]))   # replaces the default (in defaults)

        def __new__(record_cls, *values):
            if len(values) != len(names):
                if not required <= len(values) <= len(names):
                    raise TypeError(f"{cls.__name__} takes {required} to {len(names)} values, not {len(values)}")
                values += defaults[len(values) - required:]
            return tuple.__new__(record_cls, values)

        cls.__new__ = __new__

    def __getnewargs__(self) -> tuple:
        return tuple(self)      # pickle and copy call __new__ with the values, as for namedtuple

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self))
        return f"{type(self).__name__}({fields})"

    def _replace(self, **changes: object) -> TupleRecord:
        """A copy with the named fields changed (as namedtuple's ``_replace``)."""
        unknown = changes.keys() - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        return type(self)(*(changes.get(name, value) for name, value in zip(self._fields, self)))
