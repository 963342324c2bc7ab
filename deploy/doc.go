// Package deploy holds explodefs's deployment manifests (kubernetes/, a
// kustomization) and the test that decodes each of them strictly with
// client-go's scheme and checks what the daemon relies on: bidirectional
// mount propagation, probes on its listener, least-privilege RBAC, and a
// grace period longer than its bounded shutdown.
package deploy
