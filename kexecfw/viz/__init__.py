"""Pictures of memory maps, load plans and crash notes (matplotlib; the CLI imports it only for --plot).

``render`` (memory map, plan over it), ``crash`` (elfcorehdr over RAM, registers per CPU, log tail),
``pageclasses`` (pages by makedumpfile class, kept per -d level), ``planview`` (hook calls of a plan,
/chosen diff, purgatory rows), ``labdata`` (lab results for notebooks), ``widgets`` (ipywidgets).
"""
