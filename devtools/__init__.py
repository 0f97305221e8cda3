"""kube-dlq's development tools: the local control plane and the demo.

Not part of the product: the kube-dlq wheel does not contain this package, and nothing in
``watcher`` imports it (an import-linter contract checks that). ``make deps`` installs it
into the development virtualenv as the ``kube-dlq-devtools`` distribution.
"""
