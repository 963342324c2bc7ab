// Package container tests the explodefs container image end to end: it
// makes the base image and builds the image from the Dockerfile with the
// scripts in hack/, runs it with podman as a privileged container on the
// demo image, and checks from the host what a user of the image relies on:
// the FUSE tree reaches the host through rshared mount propagation, reads
// return the image's bytes, the image's HEALTHCHECK and the HTTP probes
// pass, and SIGTERM (podman stop) unmounts the tree before the container
// exits cleanly.
//
// It needs root, /dev/fuse, podman, runc and debootstrap (hack/install-deps.sh
// installs them); under CI=true a missing piece fails the test, elsewhere it
// skips. A cold run (no base image yet) takes a few minutes.
package container
