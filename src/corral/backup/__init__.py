"""Backups of the fleet's volumes with restic, through an append-only repository server.

``targets`` (which volumes, which repository), ``restic`` (the program, its password
kept out of argv), ``server`` (corral's ``rclone serve restic --append-only``), ``run``
(files and dump backups), ``restore`` (into new volumes only), ``service`` (the
commands). See docs/backups.md for the guarantees and the threat model.
"""
