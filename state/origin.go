package state

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Origin is the PostgreSQL cluster and timeline a state's positions belong
// to: a position means something only on the cluster whose WAL it points
// into, and on a timeline that holds that WAL. The zero Origin is "not
// recorded" (a new state, or one written before walhook recorded it).
type Origin struct {
	SystemID uint64 // IDENTIFY_SYSTEM's systemid: the cluster, from initdb on
	Timeline uint32 // the timeline walhook last streamed on
}

// IsZero reports whether no origin is recorded.
func (o Origin) IsZero() bool { return o == Origin{} }

func (o Origin) String() string {
	return "system " + strconv.FormatUint(o.SystemID, 10) + " timeline " + strconv.FormatUint(uint64(o.Timeline), 10)
}

// Origin records: a version byte, the system identifier (8 bytes) and the
// timeline (4), big-endian, 13 bytes.
const (
	originVersion = 1
	originLen     = 1 + 8 + 4
)

// AppendOrigin appends o's record.
func AppendOrigin(b []byte, o Origin) []byte {
	b = append(b, originVersion)
	b = binary.BigEndian.AppendUint64(b, o.SystemID)
	return binary.BigEndian.AppendUint32(b, o.Timeline)
}

// DecodeOrigin decodes what AppendOrigin wrote.
func DecodeOrigin(b []byte) (Origin, error) {
	if len(b) != originLen || b[0] != originVersion {
		return Origin{}, fmt.Errorf("%w: origin of %d bytes, want a version %d record of %d: the state is corrupt or from a newer walhook",
			ErrCorrupt, len(b), originVersion, originLen)
	}
	return Origin{SystemID: binary.BigEndian.Uint64(b[1:]), Timeline: binary.BigEndian.Uint32(b[9:])}, nil
}
