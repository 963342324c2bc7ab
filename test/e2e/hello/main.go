// Command hello is the program the end-to-end tests run with runc inside
// an image: it prints its argument and the image's /etc/message, so the
// output proves it ran from that image's root.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	msg, err := os.ReadFile("/etc/message")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
	fmt.Printf("hello %s: %s\n", strings.Join(os.Args[1:], " "), strings.TrimSpace(string(msg)))
}
