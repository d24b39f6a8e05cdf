"""Segments: the plan a load hands to the kernel, the planner that builds it, and the kernel's rules."""
