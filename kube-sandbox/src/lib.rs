//! kube-sandbox: a Kubernetes API emulator for kubectl.
