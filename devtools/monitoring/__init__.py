"""Build-time generators of kube-dlq's monitoring files in deploy/monitoring/.

`python -m devtools.monitoring` rewrites dashboard.json (from dashboard.py) and
prometheusrule.yaml (from the plain rules file kube-dlq.rules.yaml); `--check` only compares,
and exits 1 naming each file that is out of date. Not part of the product wheel.
"""
