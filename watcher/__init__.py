"""kube-dlq: classify failed Kubernetes Jobs, retry them or dead-letter them."""

__version__ = "0.1.0"
