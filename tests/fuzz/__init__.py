"""The fuzz harness: structure-aware mutations of real seeds for every parser and every whole command.

``seeds`` builds the seed files once per run (real lab data from tests/data/debian12-guests and
dumps, images and initrds made with the project's own writers), ``mutators`` changes them where
the parsers look, ``targets`` runs one parser or one CLI command on a mutated input, ``runner``
runs inputs in worker processes with a time and an address-space limit and collects findings
(anything but success or a one-line KexecfwError). ``test_fuzz_short`` is the short deterministic
campaign CI runs; ``scripts/fuzz.py`` the long ones.
"""
