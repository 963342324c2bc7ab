// Package deploy holds explodefs's deployment manifests (kubernetes/, a
// kustomization; openshift/, a template with its SCC; systemd/, a unit)
// and the tests that decode each of them strictly and check what the
// daemon relies on: bidirectional mount propagation, probes on its
// listener, least-privilege RBAC and SCC, and a grace period longer than
// its bounded shutdown.
package deploy
