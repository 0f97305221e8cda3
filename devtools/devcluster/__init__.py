"""A real local Kubernetes control plane for tests and the demo.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (standing in for
kubelets), built once from the Go module proxy and run as plain processes on loopback.
"""
