"""Measuring a recovery: a background load during a drill, and the measures computed from it.

* ``compute``   the pure computations over recorded data: RTO, RPO, failed probes, the longest
                outage, the probes' resolution, percentiles (and the records: ``Ack``,
                ``ProbeResult``, ``Rpo``, ``Outcome``)
* ``load``      the sequenced writer and the availability probe, as threads (``Load``), and the
                one clock every measure uses (``clock``)
* ``isolated``  the same load in a process of its own (``IsolatedLoad``), for a kernel that also
                runs a runbook with papermill

Import what you use from its module, e.g. ``from drillbook.measure.load import Load, clock``.
"""

__all__: list[str] = []  # the modules are the API
