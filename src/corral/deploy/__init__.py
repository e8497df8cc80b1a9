"""Deploy by replacement, one stage per module.

``context`` (what every stage shares), ``gc`` (what killed deploys left), ``resolve``
(bake, then the desired state), ``fleet`` (observe the fleet), ``plan`` (the pure planner),
``apply`` (the executor), ``settle`` and ``outcome`` (is the release live, how it ends);
``orchestrate`` runs them in order for deploy, rollback and undo. ``service`` has
``plan`` and ``edge replace``; ``status`` only reads.
"""
