"""What a project declares: environments, the notebook catalog and its metadata, the schedule,
secret references, bounded YAML reading, lint and the notebook templates.

Sits just above ``errors``, ``paths`` and ``files``; nothing here imports the runner, the
evidence archive, the site, the lab, shells or targets. Import the module you need
(``from drillbook.config.secrets import Redactor``): this package re-exports nothing.
"""
