"""Records with named fields, written like ``typing.NamedTuple`` or dataclasses but importing nothing.

:class:`TupleRecord` is for small immutable records made by the thousand; :class:`Record` is the
dataclass stand-in of the load path (see the end of this docstring).

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

Fields are the class's own annotations, in order; construction is positional only. A subclass may
define its own ``__new__`` (to check its values); it then builds the tuple with ``tuple.__new__``.

A subclass of :class:`Record` is a plain class whose ``__init__``, ``__eq__`` and ``__repr__`` are
made from its annotations like a dataclass's, but without ``dataclasses``: that module imports
``copy`` and ``weakref``, and each class it builds compiles several functions with ``exec``
(~0.4 ms each here, ten times that in an emulated guest; a ``load -p`` builds about 25)::

    class Segment(Record, eq=False):        # frozen=True: attributes cannot be set after __init__
        name: str
        log: list[str] = fresh(list)        # a new list for each record (default_factory)

Construction takes positional and keyword values; ``__post_init__`` runs after, when defined.
Subclasses inherit the fields and add theirs after. Equality compares the fields of records of
the same class (``eq=False``: identity); frozen records hash their fields, mutable ones do not hash.
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
        own_new = "__new__" in cls.__dict__
        for i, name in enumerate(names):
            # a lambda, not operator.itemgetter: importing operator costs more than all the accesses
            setattr(cls, name, property(lambda self, _i=i: self[_i]))   # replaces the default (in defaults)

        if own_new:
            return

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


class fresh:
    """A :class:`Record` field's default made anew for each record (dataclasses' default_factory)."""

    __slots__ = ("factory",)

    def __init__(self, factory: type | object) -> None:
        self.factory = factory


_MISSING = object()


class Record:
    """Base class: see the module docstring."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _frozen = False

    def __init_subclass__(cls, *, frozen: bool | None = None, eq: bool = True, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__annotations__", {})
        names = cls._fields + tuple(name for name in own if name not in cls._fields)
        defaults = dict(cls._defaults)
        for name in own:
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                if isinstance(defaults[name], fresh):
                    delattr(cls, name)      # the class attribute would be the marker
            else:
                defaults.pop(name, None)    # declared again without a default: required again
        seen_default = False
        for name in names:
            if name in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{cls.__name__}: field {name} without a default follows one with a default")
        cls._fields, cls._defaults = names, defaults
        if frozen is not None:
            cls._frozen = frozen
        if cls._frozen:
            cls.__setattr__ = cls.__delattr__ = _refuse_change
        if not eq:
            cls.__eq__, cls.__hash__ = object.__eq__, object.__hash__
        elif "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            cls.__hash__ = Record._hash_fields if cls._frozen else None

    def __init__(self, *args: object, **kwargs: object) -> None:
        names = self._fields
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} values, not {len(args)}")
        values = self.__dict__          # written directly: frozen records refuse setattr
        values.update(zip(names, args))
        for name, value in kwargs.items():
            if name in values or name not in names:
                raise TypeError(f"{type(self).__name__}: {'repeated' if name in values else 'no'} field {name}")
            values[name] = value
        if len(args) + len(kwargs) < len(names):
            for name in names:
                if name not in values:
                    default = self._defaults.get(name, _MISSING)
                    if default is _MISSING:
                        raise TypeError(f"{type(self).__name__} needs a value for {name}")
                    values[name] = default.factory() if type(default) is fresh else default
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def _hash_fields(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def _replace(self, **changes: object) -> Record:
        """A copy with the named fields changed (as dataclasses.replace)."""
        unknown = changes.keys() - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        return type(self)(**{name: changes.get(name, getattr(self, name)) for name in self._fields})


def _refuse_change(self: Record, name: str, *value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot change {name}")
