"""Physical memory: ranges and their algebra, the memory map, its sources and hole finding."""
from kexecfw.memory.ranges import Range, merge, subtract, intersect, total_size
from kexecfw.memory.model import MemoryMap, Region, RegionKind

__all__ = ["Range", "merge", "subtract", "intersect", "total_size", "MemoryMap", "Region", "RegionKind"]
