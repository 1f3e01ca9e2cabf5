"""The evidence: what a run leaves behind, and how anyone proves it was not changed.

``record`` (the run record's one schema and the pass/fail verdict), ``archive`` (bundles, their
MANIFEST, reading runs back), ``ledger`` (the signed hash chain), ``keys`` (the signing key),
``verify`` (every hash and signature recomputed) and ``status`` (the latest run per notebook ×
environment). Only the schema is exported here: a drill's kernel imports it, and importing the
package must not load the archive's cryptography (or pandas) into every kernel.
"""
from .record import Journal, Record, verdict

__all__ = ["Journal", "Record", "verdict"]
