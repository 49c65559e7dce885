"""``matih-lite promote --to cluster``: the state of every slot copied from one profile's backends to
another's through the slot contracts, then verified equal.

Nothing here knows an engine: the metadata slot is copied table by table through
:class:`~matih_lite.contracts.transfer.TableTransfer`, artifacts through
:class:`~matih_lite.contracts.ArtifactStore`. Each copy is idempotent (a row or file already there
and equal is left alone) and so resumable; :mod:`matih_lite.promote.journal` remembers which target
an unfinished promote was writing to, so that continuing it is not mistaken for a target holding
other data.
"""
