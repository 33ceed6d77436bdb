"""mqstore's built-in engines (installed as ``mqstore.engines``).

- ``segments``: Kafka's log design (``mqstore.engines.segments``).
- ``commitlog``: RocketMQ's store design (``mqstore.engines.commitlog``).

Engines are found through the registry (``mqstore.registry``), never imported by the core.

The contract names both a function ``mqstore.engines()`` and this package ``mqstore.engines``.
Importing a subpackage rebinds the attribute ``mqstore.engines`` to this module, so the module
is made callable and returns the same list: ``mqstore.engines()`` works either way.
"""
import sys
import types


class _EnginesModule(types.ModuleType):
    def __call__(self) -> list[str]:
        """The names of the registered engines, sorted (same as ``mqstore.engines()``)."""
        from mqstore import registry

        return registry.names()


sys.modules[__name__].__class__ = _EnginesModule
