"""Hook specifications: the reference for plugin authors.

An architecture plugin is a module (or object) with functions decorated by
``@kexecfw.hookimpl`` whose names are the hooks below. Register it in the
``kexecfw`` entry-point group of your package::

    [project.entry-points.kexecfw]
    riscv64 = "kexecfw_riscv64"

Entry points are read when an architecture (or ELF machine) that no registered plugin
serves is asked for, and for the full listing (``kexecfw plugins``): a load of a
built-in architecture never scans them (start-up), so a plugin that only adds to a
built-in architecture is not loaded by a load (in code, pass ``entry_points=True`` or
``extra=`` to :func:`kexecfw.pluginmanager.new_plugin_manager`).

Conventions
-----------
* Hooks are called with keyword arguments only; implement only the parameters
  you need (pluggy passes the ones your function names).
* The core decides whose turn it is, not the plugin: a hook that takes ``ctx`` is
  called on the plugin that serves ``ctx.arch`` only (the one whose
  :func:`kexecfw_architectures` names it), a hook that takes ``machine`` on the
  plugin serving that ELF machine only; a plugin that serves no architecture
  (the core's defaults, an observer or a ``wrapper=True`` logger) is called for
  every architecture. So an implementation never checks ``ctx.arch``: it is
  only ever called for its own. :func:`kexecfw_architectures` is the one hook
  called on every plugin. Each hook's docstring below says which it is.
* ``firstresult`` hooks stop at the first non-None answer. The core registers
  generic defaults as ``trylast`` implementations, so an architecture overrides
  them by implementing the hook; return ``None`` to leave a step to the default
  (x86_64's :func:`kexecfw_plan_load` does for classic loads).
* Raise :class:`kexecfw.errors.KexecfwError` (or a subclass) with a one-line,
  actionable message for anything the user must fix.
* A load is planned in this order; each step sees what the earlier ones added
  to the :class:`~kexecfw.segments.planner.Planner`:

  1. :func:`kexecfw_memory_map`      - the sysroot's physical memory
  2. :func:`kexecfw_probe_kernel`    - recognise and unwrap the kernel image
  3. :func:`kexecfw_place_kernel`    - the kernel segment(s); returns the kernel's entry
  4. :func:`kexecfw_place_initrd`    - the initrd segment
  5. :func:`kexecfw_elfcore_info`    - (panic only) facts for the elfcorehdr the core builds
  6. :func:`kexecfw_boot_params`     - DTB / boot_params / command line for the next kernel
  7. :func:`kexecfw_purgatory`       - the purgatory object and the symbols to patch in it;
     the core links it with :func:`kexecfw_relocation_types` and fills its sha256 regions
  8. :func:`kexecfw_finalize_plan`   - last look at entry and flags

  :func:`kexecfw_plan_load` wraps the whole sequence: implement it with
  ``wrapper=True`` to observe or adjust every plan (logging, notebooks).

Layout of a plugin package
--------------------------
Let the entry point name the package. The core registers its ``hooks`` module
(the ``@hookimpl`` functions below; a plain module of hooks is registered as it
is), and the dump readers import its ``capture`` module, which must import
neither the hooks nor pluggy: ``vmcore dmesg`` runs in a capture kernel that
counts its start-up. Keep the package's ``__init__`` free of imports::

    kexecfw_riscv64/__init__.py   # nothing the dump readers would pay for
    kexecfw_riscv64/hooks.py      # @hookimpl def kexecfw_architectures(): ...
    kexecfw_riscv64/capture.py    # CAPTURE = kexecfw.machines.MachineCapture(...)

``capture.CAPTURE`` (:class:`kexecfw.machines.MachineCapture`) tells the dump
readers, by ELF machine: the ``utsname.machine`` names of its kernels (kdump
headers), its page sizes and physical address bits (the bounds every number
read from a dump is checked against), the NT_PRSTATUS register layout with its
program counter, stack pointer and link register
(:class:`kexecfw.machines.RegisterLayout`), and a translator of kernel virtual
addresses (a :class:`kexecfw.vmcore.kmem.Translator`: linear rules, page-table
walk, direct-map base, phys_base). No hook is involved: adding an
architecture's capture support is that one module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from kexecfw.memory.model import MemoryMap
    from kexecfw.model import ArchSpec, ElfcoreInfo, KernelFile, KernelImage, LoadContext, PurgatoryObject
    from kexecfw.model import RelocationApplier
    from kexecfw.segments.plan import Plan, Segment
    from kexecfw.segments.planner import Planner

hookspec = pluggy.HookspecMarker("kexecfw")


# --- which architectures ------------------------------------------------------------------

@hookspec
def kexecfw_architectures() -> list[ArchSpec]:
    """Return the architectures this plugin serves (usually one :class:`~kexecfw.model.ArchSpec`).

    Called on every plugin, and collected. The ArchSpec names the architecture, its aliases
    (``aarch64``, ``amd64``), its ELF machine (used to pick the plugin for a
    sysroot from its proc/kcore, and for vmcores), page size and syscall numbers.
    """


# --- kernel image -------------------------------------------------------------------------

@hookspec(firstresult=True)
def kexecfw_probe_kernel(ctx: LoadContext, kernel_file: KernelFile) -> KernelImage | None:
    """Recognise ``kernel_file`` as a loadable kernel of ``ctx.arch`` and return it parsed.

    Unwrap what you can (gzip, vmlinux ELF) into ``KernelImage.payload``. Return
    None if the file is not an image of your architecture; raise a
    KexecfwError when it is yours but cannot be loaded (say why: wrong page
    size, big-endian, too old a boot protocol ...).

    Called on ``ctx.arch``'s plugin only.
    """


# --- memory discovery ---------------------------------------------------------------------

@hookspec(firstresult=True)
def kexecfw_memory_map(ctx: LoadContext) -> MemoryMap | None:
    """Turn ``ctx.sysroot`` into a :class:`~kexecfw.memory.model.MemoryMap`.

    The map classifies System RAM, reserved and ACPI ranges, the crash kernel
    region(s) and the running kernel's code/data. The core's default parses
    proc/iomem; implement this to use other sources (sys/firmware/memmap, the
    device tree) or to refine the classification.

    Called on ``ctx.arch``'s plugin only.
    """


# --- segments -----------------------------------------------------------------------------

@hookspec(firstresult=True)
def kexecfw_place_kernel(ctx: LoadContext, planner: Planner) -> int | None:
    """Add the kernel segment(s) for ``ctx.kernel`` to ``planner``; return the kernel's entry.

    The returned physical address is where the purgatory jumps. Follow your
    architecture's placement rules (alignment, text offset, preferred address).
    For a panic load the planner only offers the crash region.

    Called on ``ctx.arch``'s plugin only.
    """


@hookspec(firstresult=True)
def kexecfw_place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment | None:
    """Add the initrd segment (``initrd`` is the file's content); return it.

    The core's default places it at the lowest page-aligned hole above the kernel.

    Called on ``ctx.arch``'s plugin only.
    """


@hookspec(firstresult=True)
def kexecfw_elfcore_info(ctx: LoadContext) -> ElfcoreInfo | None:
    """Panic loads only: the facts the core needs to build the elfcorehdr.

    ELF machine, the kernel text PT_LOAD (virtual address of ``_text``, its
    physical address and size), the direct-map offset for the System RAM
    PT_LOADs, and optionally which physical ranges to dump. The core adds one
    PT_NOTE per CPU from crash_notes and one for VMCOREINFO, and places the
    header top-down in the crash region.

    Called on ``ctx.arch``'s plugin only.
    """


@hookspec(firstresult=True)
def kexecfw_boot_params(ctx: LoadContext, planner: Planner, kernel_entry: int) -> bool | None:
    """Build what the next kernel reads at boot and add it to ``planner``; return True.

    arm64: a DTB with /chosen (bootargs, initrd, elfcorehdr, usable memory).
    x86_64: boot_params with e820 and the command line. The planner already
    holds the kernel, the initrd (``planner.get("initrd")``) and, for a panic
    load, the elfcorehdr (``planner.get("elfcorehdr")``). ``ctx.cmdline`` is the
    command line to pass; extend it here if your architecture passes facts there.

    Called on ``ctx.arch``'s plugin only.
    """


@hookspec(firstresult=True)
def kexecfw_purgatory(ctx: LoadContext, planner: Planner, kernel_entry: int) -> PurgatoryObject | None:
    """Return the purgatory to link: a relocatable ELF, placement, and symbols to patch.

    Set ``PurgatoryObject.symbols`` to the register values the purgatory hands
    the kernel (entry, DTB or boot_params address, stack ...). The core places
    and links the object, then writes ``purgatory_sha256_regions``: for every
    other segment its start, bufsz, memsz and the sha256 of its bufsz bytes
    (layout in kexecfw/purgatory/verify.c, whose ``purgatory_verify_sha256`` also
    checks that the rest up to memsz is zero; zero regions with
    ``--skip-sha256``). Return None for a load without purgatory.

    Called on ``ctx.arch``'s plugin only.
    """


@hookspec(firstresult=True)
def kexecfw_relocation_types(machine: int) -> dict[int, tuple[str, RelocationApplier]] | None:
    """For ELF ``machine``, map each relocation type the purgatory uses to (name, apply).

    The core's linker rejects any other type by name. ``apply(buf, offset,
    place, value)`` patches ``buf`` at ``offset``: ``place`` is the load address
    of that byte, ``value`` is S + A.

    Called on the plugin serving ``machine`` only.
    """


@hookspec
def kexecfw_finalize_plan(ctx: LoadContext, plan: Plan) -> None:
    """Last change to a plan before validation: adjust ``plan.entry`` or ``plan.flags``.

    Not ``firstresult``: called on ``ctx.arch``'s plugin only, and on every plugin that serves no
    architecture.
    """


@hookspec(firstresult=True)
def kexecfw_plan_load(ctx: LoadContext) -> Plan | None:
    """Plan a whole load. The core implements the standard sequence above (trylast).

    Implement it as ``@hookimpl(wrapper=True)`` to observe or adjust every plan::

        @hookimpl(wrapper=True)
        def kexecfw_plan_load(ctx):
            plan = yield
            print(plan.segments)
            return plan

    Called on ``ctx.arch``'s plugin only.
    """
