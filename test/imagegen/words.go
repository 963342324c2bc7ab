package imagegen

import "strings"

// wordList feeds Text content; a few hundred common English and
// programming words give text that gzip compresses about as well as real
// documentation.
const wordList = `the of and to in is that for it as with was on be by this are from or an at which not have can has
but all one were their more other been its when there into also only new some these two first may
time such would could than used use any each most many after over where while about those both
between under through then them they what who will system file data value return error function
package import struct interface string buffer config server client request response handler context
layer image manifest index digest blob tar gzip entry header offset length size mode owner group
device inode directory symlink target path root mount read write open close seek stat cache queue
worker thread process signal timeout retry backoff network socket address port protocol stream frame
packet message event log level debug info warn fatal trace metric counter gauge histogram label
module version release build test bench assert expect compare result output input parse format
encode decode marshal unmark token lexer parser syntax tree node edge graph vertex weight cost
search sort merge split join filter map reduce apply lookup insert delete update commit rollback
transaction lock mutex atomic channel select default break continue switch case goto defer panic
recover range slice array pointer memory heap stack alloc free garbage collect sweep mark pause
latency throughput capacity volume region zone cluster replica shard partition primary secondary
leader follower quorum vote term election heartbeat snapshot compact journal record schema table
column row key unique foreign constraint view trigger cursor fetch limit order having distinct union
except intersect window lateral november december january february march april summer winter autumn
spring morning evening yesterday tomorrow river mountain forest valley ocean island desert meadow
garden orchard harbor bridge tower castle village city quickly slowly carefully loudly quietly
gently firmly brightly darkly softly sharply smoothly roughly freely`

// words splits wordList; callers keep the result for the life of one
// generator rather than sharing a package-level slice.
func words() []string { return strings.Fields(wordList) }
