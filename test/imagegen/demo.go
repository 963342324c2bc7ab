package imagegen

// DemoImage is the small image `make run` serves: a handful of files a
// person can look at in a mounted tree.
func DemoImage() Image {
	return SingleImage(demoLayer(1))
}

func demoLayer(seed uint64) Layer {
	return Layer{Compression: Gzip, CreatedBy: "demo", Entries: Entries(
		Dir("etc", 0o755),
		File("etc/os-release", 0o644, String(`NAME="explodefs demo"
ID=explodefs-demo
VERSION_ID=1
PRETTY_NAME="explodefs demo image"
`)),
		File("README", 0o644, String(`This tree is an OCI image served by explodefs.
Nothing was unpacked: every read is answered from the compressed layer.
`)),
		Dir("usr", 0o755),
		Dir("usr/local", 0o755),
		Dir("usr/local/bin", 0o755),
		File("usr/local/bin/hello", 0o755, String("#!/bin/sh\necho \"hello from explodefs\"\n")),
		Symlink("hello", "usr/local/bin/hello"),
		Dir("usr/share", 0o755),
		Dir("usr/share/doc", 0o755),
		Dir("usr/share/doc/demo", 0o755),
		File("usr/share/doc/demo/words.txt", 0o644, Text(seed, 64<<10)),
	)}
}
