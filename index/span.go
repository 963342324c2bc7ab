package index

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// MarshalBinary encodes a span without its window, which is stored apart
// so that loading a layer's span table stays small.
func (s *Span) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 56)
	b = binary.AppendUvarint(b, uint64(s.Out))
	b = binary.AppendUvarint(b, uint64(s.In))
	flags := s.Bits & 7
	if s.MemberStart {
		flags |= 8
	}
	b = append(b, flags)
	return append(b, s.Digests...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (s *Span) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	s.Out = int64(d.uvarint())
	s.In = int64(d.uvarint())
	flags := d.byte()
	if d.err != nil || len(d.b)%sha256.Size != 0 {
		return errors.New("corrupt span record")
	}
	s.Bits, s.MemberStart = flags&7, flags&8 != 0
	s.Digests = bytes.Clone(d.b)
	return nil
}
